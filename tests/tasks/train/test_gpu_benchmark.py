"""benchmarks/train_gpu.py must run where Prefect is absent (the GPU image): a CPU smoke run proves it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.no_prefect import BLOCK_PREFECT

REPO = Path(__file__).resolve().parents[3]

_BLOCK_PREFECT = (
    BLOCK_PREFECT +
    "from benchmarks.train_gpu import main\n"
    "main(sys.argv[1:])\n"
)


def test_the_gpu_benchmark_runs_without_prefect_on_a_self_made_dataset(tmp_path):
    args = ["--device", "cpu", "--model", "hubbleclip-tiny", "--batches", "8", "--steps", "2", "--warmup", "1",
            "--modes", "eager,eager/mha", "--no-open-clip", "--workers", "0", "--precision", "fp32", "--examples", "32",
            "--unique-images", "4", "--data", str(tmp_path / "data")]
    done = subprocess.run([sys.executable, "-c", _BLOCK_PREFECT, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "built dataset" in done.stdout and "GFLOP per sample" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("8  eager")]
    # the trainer's fused attention, then open_clip's own nn.MultiheadAttention ("/mha")
    assert [row[1:3] for row in rows] == [["eager", "shards"], ["eager", "bare"], ["eager/mha", "shards"],
                                          ["eager/mha", "bare"]], done.stdout


def test_an_unknown_mode_stops_the_benchmark_before_any_work(tmp_path):
    from benchmarks.train_gpu import main

    with pytest.raises(SystemExit, match="unknown mode 'compile/flash'"):
        main(["--device", "cpu", "--modes", "eager,compile/flash", "--data", str(tmp_path / "data")])
    assert not (tmp_path / "data").exists()


def test_open_clips_rate_is_read_from_its_mean_step_time_not_one_steps_rate():
    from benchmarks.train_gpu import open_clip_rates

    log = ("Train Epoch: 0 [ 2560/20480 (12%)] Data (t): 0.002 Batch (t): 0.160, 2000.00/s, 2000.00/s/gpu LR: 0.0\n"
           "Train Epoch: 0 [ 3840/20480 (19%)] Data (t): 0.001 Batch (t): 0.128, 1.00000e+04/s, 1.0e+04/s/gpu LR: 0\n")
    assert open_clip_rates(log, 256) == [256 / 0.160, 256 / 0.128]
