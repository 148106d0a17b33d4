"""run_train end to end on a real (small) dataset version: outputs, cache, resume, bad input."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

from schemas.dataset import BuildDatasetParams
from schemas.errors import InputError
from schemas.train import TrainParams
from tasks.dataset import run_build_dataset
from tasks.dataset.synthetic import write_synthetic_inputs
from tasks.train import load_trained, run_train
from tasks.train.model import TINY_MODEL
from tasks.train.run_log import read_metrics

SIZE = 80  # stored preview side: the tiny preset crops 64 px from it


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("train-stage") / "data")
    write_synthetic_inputs(data, proposals=40, images_per_proposal=3, size=SIZE, seed=2)
    result = run_build_dataset(BuildDatasetParams(data=data, image_size=SIZE, row_group_rows=16,
                                                  train_fraction=0.6, val_fraction=0.3, test_fraction=0.1))
    return data, result.digest


def _params(data: str, **overrides) -> TrainParams:
    base = dict(data=data, preset="tiny", steps=6, batch_size=16, checkpoint_every=3, val_every=3, val_pairs=100,
                log_every=2, device="cpu", workers=0, resize_to=None)
    base.update(overrides)
    return TrainParams(**base)


class Interrupt(Exception):
    pass


def test_a_run_writes_its_directory_and_an_unchanged_rerun_is_cached(dataset):
    data, version = dataset
    result = run_train(_params(data))
    run_dir = result.outputs["run_dir"]
    assert not result.cached and result.stats["steps"] == 6
    assert run_dir.rsplit("/", 1)[-1].startswith(f"{version}-tiny-")
    config = json.loads(open(f"{run_dir}/config.json").read())
    assert config["config"]["model"] == TINY_MODEL and config["dataset"]["version"] == version
    records = read_metrics(run_dir)
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
    assert [r["step"] for r in records if r["split"] == "val"] == [3, 6]
    assert all(r["samples_per_s"] > 0 for r in records if r["split"] == "train")
    for name in ("step_3.pt", "step_6.pt", "last.pt", "best.pt"):
        assert (f"{run_dir}/checkpoints/{name}") and open(f"{run_dir}/checkpoints/{name}", "rb").read(2)
    assert list((__import__("pathlib").Path(run_dir) / "tensorboard").glob("events.*"))

    weights = f"{run_dir}/final/open_clip_pytorch_model.bin"
    reloaded, _, _ = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=weights)
    model, tokenizer, preprocess, sha = load_trained(run_dir)
    assert sha == result.stats["checkpoint_sha256"]
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    base = load_trained(run_dir, which="base").model
    assert not torch.equal(base.state_dict()["visual.conv1.weight"], model.state_dict()["visual.conv1.weight"])

    again = run_train(_params(data, val_every=5, checkpoint_every=100))  # logging cadence is not the recipe
    assert again.cached and again.digest == result.digest and again.outputs == result.outputs


def test_an_interrupted_run_resumes_to_the_same_weights(dataset):
    data, _ = dataset

    def stop_at_4(step, total, record):
        if step == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_train(_params(data, run_name="interrupted", seed=7, log_every=1), progress=stop_at_4)
    resumed = run_train(_params(data, run_name="interrupted", seed=7, log_every=1))
    straight = run_train(_params(data, run_name="straight", seed=7, log_every=1))
    a = load_trained(resumed.outputs["run_dir"]).model.state_dict()
    b = load_trained(straight.outputs["run_dir"]).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metrics(resumed.outputs["run_dir"]) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # the step-4 line logged before the stop was replaced, not doubled


def test_bad_inputs_fail_before_training(dataset, tmp_path):
    data, _ = dataset
    with pytest.raises(InputError, match="unknown model name 'ViT-Nope'"):
        run_train(_params(data, model="ViT-Nope", run_name="never"))
    with pytest.raises(InputError, match="missing.pt does not exist"):
        run_train(_params(data, pretrained=str(tmp_path / "missing.pt"), run_name="never"))
    with pytest.raises(InputError, match="no dataset"):
        run_train(_params(str(tmp_path / "empty"), run_name="never"))
    with pytest.raises(InputError, match="0123456789abcdef"):
        run_train(_params(data, dataset_version="0123456789abcdef", run_name="never"))
    assert not (__import__("pathlib").Path(data) / "runs" / "never").exists()


def test_a_version_without_a_train_split_is_refused(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=4, images_per_proposal=1, size=SIZE, cycles=(25,), seed=3)
    result = run_build_dataset(BuildDatasetParams(data=data, image_size=SIZE, split_mode="cycle", cycle_cutoff=10))
    with pytest.raises(InputError, match=f"{result.digest} has no train split"):
        run_train(_params(data))


def test_a_checkpoint_of_another_config_is_not_resumed(dataset):
    data, _ = dataset
    run_train(_params(data, run_name="shared", steps=3))
    with pytest.raises(InputError, match="another config"):
        run_train(_params(data, run_name="shared", steps=3, lr=0.5, resume=True))


def test_the_run_manifest_records_the_final_weights_files_own_hash_and_size(dataset):
    import hashlib
    from pathlib import Path

    result = run_train(_params(data=dataset[0]))  # the first test's run (cached) when it ran before
    run_dir = Path(result.outputs["run_dir"])
    [entry] = json.loads((run_dir / "manifest.json").read_text())["files"]
    weights = (run_dir / entry["path"]).read_bytes()
    assert entry["path"] == "final/open_clip_pytorch_model.bin"
    assert entry["sha256"] == hashlib.sha256(weights).hexdigest() and entry["bytes"] == len(weights)
