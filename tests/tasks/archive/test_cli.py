"""`hubbleclip archive generate | extend | serve` from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests
from typer.testing import CliRunner

from flows.cli import app

REPO = Path(__file__).resolve().parents[3]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_generate_and_extend(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "sky"
    result = runner.invoke(app, ["archive", "generate", "--out", str(out), "--proposals", "3", "--seed", "4",
                                 "--workers", "1", "--no-bad-records"])
    assert result.exit_code == 0, result.output
    assert "3 proposals" in result.output
    assert json.loads((out / "sky.json").read_text())["info"]["proposals"] == 3
    result = runner.invoke(app, ["archive", "extend", "--sky", str(out), "--proposals", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "now 5 proposals" in result.output


def test_mean_observations_sets_the_sky_size(tmp_path: Path) -> None:
    runner = CliRunner()
    counts = {}
    for mean in (2.0, 12.0):
        out = tmp_path / f"sky-{mean}"
        result = runner.invoke(app, ["archive", "generate", "--out", str(out), "--proposals", "6", "--seed", "4",
                                     "--workers", "1", "--no-bad-records", "--mean-observations", str(mean)])
        assert result.exit_code == 0, result.output
        info = json.loads((out / "sky.json").read_text())["info"]
        counts[mean] = info["observations"]
    assert counts[12.0] > 2 * counts[2.0]
    bad = runner.invoke(app, ["archive", "generate", "--out", str(tmp_path / "bad"), "--proposals", "6",
                              "--no-bad-records", "--mean-observations", "30"])
    assert bad.exit_code != 0


def test_errors_are_one_line(tmp_path: Path) -> None:
    both = _cli("archive", "serve", "--sky", str(tmp_path), "--replay", str(tmp_path))
    assert both.returncode == 1 and both.stderr.strip().count("\n") == 0 and "exactly one of" in both.stderr
    rate = _cli("archive", "serve", "--sky", str(tmp_path), "--fail-rate", "2")
    assert rate.returncode == 1 and "fail_rate" in rate.stderr
    small = _cli("archive", "generate", "--out", str(tmp_path / "s"), "--proposals", "4")
    assert small.returncode == 1 and "bad_records needs at least 10 proposals" in small.stderr


def test_serve_prints_its_url_and_stops_on_interrupt(demo_sky: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "archive", "serve", "--sky", str(demo_sky),
                                "--port", "0", "--latency-ms", "1"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        health = requests.get(f"{url}/health", timeout=10).json()
        assert health["status"] == "OK" and str(demo_sky) in health["serving"] and health["faults"]["latency_ms"] == 1
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
