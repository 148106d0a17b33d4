"""The train flow (a run directory plus a metrics artifact) and the `hubbleclip train` command."""

from __future__ import annotations

import pytest
from prefect.artifacts import Artifact
from typer.testing import CliRunner

from flows.cli import app, main
from flows.train import train
from schemas.dataset import BuildDatasetParams
from schemas.train import TrainParams
from tasks.dataset import run_build_dataset
from tasks.dataset.synthetic import write_synthetic_inputs
from tasks.train import load_trained

SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("flow-train") / "data")
    write_synthetic_inputs(root, proposals=24, images_per_proposal=2, size=SIZE, seed=4)
    run_build_dataset(BuildDatasetParams(data=root, image_size=SIZE, row_group_rows=8, train_fraction=0.6,
                                         val_fraction=0.3, test_fraction=0.1))
    return root


def test_flow_trains_publishes_metrics_and_is_cached_on_rerun(data):
    params = TrainParams(data=data, preset="tiny", steps=4, batch_size=8, val_every=2, checkpoint_every=2,
                         log_every=2, device="cpu", workers=0)
    result = train(params)
    assert not result.cached and result.stats["steps"] == 4
    model, tokenizer, _preprocess, sha = load_trained(result.outputs["run_dir"])
    assert sha == result.stats["checkpoint_sha256"] and tokenizer(["dust"]).shape[0] == 1
    artifact = Artifact.get("train-metrics")
    assert artifact is not None and "val_top10pct_i2t" in str(artifact.data)
    assert train(params).cached


def test_cli_trains_and_reports_bad_input_in_one_line(data, capsys):
    runner = CliRunner()
    ran = runner.invoke(app, ["train", "--data", data, "--preset", "tiny", "--steps", "2", "--batch-size", "8",
                              "--val-every", "2", "--device", "cpu", "--workers", "0", "--json"])
    assert ran.exit_code == 0, ran.output
    assert '"stage": "train"' in ran.output
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", data, "--model", "ViT-Nope", "--steps", "2"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hubbleclip: error: unknown model name 'ViT-Nope'"), err
    presets = runner.invoke(app, ["train-presets"])
    assert presets.exit_code == 0 and "paper" in presets.output and "ViT-B-16" in presets.output


def test_every_train_parameter_is_an_option_of_hubbleclip_train_and_reaches_the_params(monkeypatch, tmp_path):
    import typer

    import flows.commands.train as train_command

    command = typer.main.get_command(app).commands["train"]
    options = {p.name for p in command.params} - {"use_flow", "as_json"}
    renamed = {"shuffled": "shuffled_pairs"}
    assert {renamed.get(name, name) for name in options} == set(TrainParams.model_fields)

    seen = []

    def record_and_stop(params, use_flow):
        seen.append(params)
        raise SystemExit(0)  # the parameters are what is tested, not a training run

    monkeypatch.setattr(train_command, "_train", record_and_stop)
    CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--head-hidden", "256", "--keep-checkpoints", "5",
                             "--val-pairs", "300", "--log-every", "3", "--decode-device", "cuda",
                             "--no-fused-attention"])
    params = seen[0]
    assert (params.head_hidden, params.keep_checkpoints, params.val_pairs, params.log_every, params.decode_device,
            params.fused_attention) == (256, 5, 300, 3, "cuda", False)
