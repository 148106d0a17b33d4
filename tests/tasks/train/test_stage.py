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
from tests.tasks.train.conftest import build_small_dataset

SIZE = 80  # stored preview side: the tiny preset crops 64 px from it


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_small_dataset(tmp_path_factory.mktemp("train-stage"), proposals=40, seed=2,
                               fractions=(0.6, 0.3, 0.1), size=SIZE)


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


def _meta(path) -> dict:
    return json.loads(open(path).read())


def test_a_reused_run_name_with_another_config_starts_clean(dataset):
    from pathlib import Path

    from tasks.train.checkpoint import load_checkpoint

    data, _ = dataset
    first = run_train(_params(data, run_name="reused", steps=9))
    run_dir = Path(first.outputs["run_dir"])
    old_hash = _meta(run_dir / "base" / "model.json")["config_hash"]
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {"step_3.pt", "step_6.pt", "step_9.pt"}
    second = run_train(_params(data, run_name="reused", steps=6, lr=1e-4, keep_checkpoints=2, resume=False,
                               overwrite=True))
    new_hash = _meta(run_dir / "final" / "model.json")["config_hash"]
    assert new_hash != old_hash and second.stats["steps"] == 6
    # The first config's step_9.pt would outrank (and prune) the new run's step files.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt", "step_3.pt",
                                                                         "step_6.pt"]
    for name in ("step_3.pt", "step_6.pt", "last.pt", "best.pt"):
        assert load_checkpoint(str(run_dir / "checkpoints" / name))["meta"]["config_hash"] == new_hash
    assert _meta(run_dir / "base" / "model.json")["config_hash"] == new_hash  # step 0 of this config
    load_trained(str(run_dir), wise_ft_alpha=0.5)  # base/ and final/ are one config's: they interpolate


def test_a_finished_run_of_another_config_is_replaced_only_with_overwrite(dataset):
    import hashlib
    from pathlib import Path

    data, _ = dataset
    run_dir = Path(run_train(_params(data, run_name="finished", steps=3)).outputs["run_dir"])

    def snapshot() -> dict[str, str]:
        return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(run_dir.rglob("*")) if p.is_file()}

    before = snapshot()
    assert "final/open_clip_pytorch_model.bin" in before and "manifest.json" in before
    old_hash = _meta(run_dir / "final" / "model.json")["config_hash"]
    for resume in (True, False):  # --no-resume used to delete the finished run's final model
        with pytest.raises(InputError, match=r"run finished under .* already finished with another config.*--overwrite"):
            run_train(_params(data, run_name="finished", steps=6, resume=resume))
    assert snapshot() == before
    # With overwrite, the other config's checkpoints are not resumed (resume stays on): a fresh run.
    replaced = run_train(_params(data, run_name="finished", steps=6, overwrite=True))
    assert replaced.stats["steps"] == 6 and not replaced.cached
    assert _meta(run_dir / "final" / "model.json")["config_hash"] != old_hash


def test_a_local_dir_model_trains_and_its_export_loads(dataset, tmp_path):
    import shutil

    data, _ = dataset
    source = tmp_path / "source"
    shutil.copytree(run_train(_params(data)).outputs["final"], source)  # an open_clip folder (first test's run)
    (source / "model.json").unlink()
    result = run_train(_params(data, model=f"local-dir:{source}", steps=3, run_name="from-local-dir"))
    config = _meta(f"{result.outputs['final']}/open_clip_config.json")
    assert config["model_cfg"] == _meta(source / "open_clip_config.json")["model_cfg"]  # not {}
    model, tokenizer, _preprocess, sha = load_trained(result.outputs["run_dir"])
    assert sha == result.stats["checkpoint_sha256"] and tokenizer(["a nebula"]).shape == (1, 32)
    base = load_trained(result.outputs["run_dir"], which="base").model.state_dict()
    source_weights = torch.load(source / "open_clip_pytorch_model.bin", weights_only=True)
    assert all(torch.equal(base[k], source_weights[k]) for k in source_weights)  # step 0 is the source model


def test_overwriting_a_pretrained_file_at_the_same_path_is_a_new_run(dataset, tmp_path):
    data, _ = dataset
    weights = tmp_path / "init.pt"
    first_final = run_train(_params(data)).outputs["final"]
    torch.save({"state_dict": torch.load(f"{first_final}/open_clip_pytorch_model.bin", weights_only=True)}, weights)
    one = run_train(_params(data, pretrained=str(weights), steps=3))
    assert run_train(_params(data, pretrained=str(weights), steps=3)).cached
    state = torch.load(weights, weights_only=True)
    state["state_dict"]["logit_scale"] += 0.5
    torch.save(state, weights)  # other weights, same path
    two = run_train(_params(data, pretrained=str(weights), steps=3))
    assert not two.cached and two.outputs["run_dir"] != one.outputs["run_dir"]
    # Tags and random init are names of weights, not files: nothing is hashed for them.
    from tasks.train.fingerprint import weights_fingerprint

    assert weights_fingerprint("ViT-B-16", "openai") is None and weights_fingerprint(TINY_MODEL, "") is None


def test_a_batch_or_crop_the_split_cannot_serve_fails_before_anything_is_built(dataset, monkeypatch):
    import tasks.train.stage as stage

    data, version = dataset

    def unreachable(*args, **kwargs):
        raise AssertionError("reached before the input was refused")

    monkeypatch.setattr(stage, "init_distributed", unreachable)
    monkeypatch.setattr(stage, "create_clip", unreachable)
    with pytest.raises(InputError, match=rf"batch_size 128 is larger than the train split of dataset {version}"):
        run_train(_params(data, batch_size=128, run_name="never"))
    with pytest.raises(InputError, match="image_size 96 .* is larger than resize_to 80"):
        run_train(_params(data, image_size=96, resize_to=80, run_name="never"))
    with pytest.raises(InputError, match="image_size 64 .* is larger than resize_to 32"):
        run_train(_params(data, resize_to=32, run_name="never"))
    with pytest.raises(InputError, match=rf"image_size 224 \(model ViT-B-16\) .* stored images \({SIZE} px\)"):
        run_train(_params(data, preset="paper", batch_size=16, run_name="never"))  # no download: refused first
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match="batch_size 16 does not split evenly over 3 ranks"):
        run_train(_params(data, run_name="never"))
    assert not (__import__("pathlib").Path(data) / "runs" / "never").exists()


def test_a_cache_hit_reads_no_shard(dataset, monkeypatch):
    from tasks.dataset.versions import DatasetVersion

    data, _ = dataset
    params = _params(data, run_name="cache-reads", steps=3)
    run_train(params)
    verified = []
    monkeypatch.setattr(DatasetVersion, "verify", lambda self: verified.append(self.version))
    assert run_train(params).cached and verified == []  # hashing every shard is for runs that train
    assert not run_train(_params(data, run_name="cache-reads-2", steps=3)).cached and verified


def test_a_cached_run_needs_its_final_weights_intact(dataset):
    from pathlib import Path

    data, _ = dataset
    params = _params(data, run_name="cache-check", steps=3)
    first = run_train(params)
    weights = Path(first.outputs["final"]) / "open_clip_pytorch_model.bin"
    damaged = bytearray(weights.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    weights.write_bytes(bytes(damaged))  # not the bytes the manifest records
    again = run_train(params)
    assert not again.cached  # exported again from last.pt (at the final step): same weights, same stats
    for key in ("checkpoint_sha256", "final_train_loss", "final_val", "best_step"):
        assert again.stats[key] == first.stats[key], key
    weights.unlink()
    assert not run_train(params).cached
    assert load_trained(first.outputs["run_dir"]).checkpoint_sha256 == first.stats["checkpoint_sha256"]
    (Path(first.outputs["final"]) / "model.json").unlink()
    assert not run_train(params).cached


def test_the_resume_checkpoint_is_released_once_restored(dataset, monkeypatch):
    import gc
    import weakref

    import tasks.train.stage as stage

    data, _ = dataset

    def stop_at_4(step, total, record):
        if step == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_train(_params(data, run_name="release", checkpoint_every=2), progress=stop_at_4)

    class Payload(dict):  # a dict that can be weakly referenced
        pass

    refs = []
    load = stage.load_checkpoint
    monkeypatch.setattr(stage, "load_checkpoint", lambda url: refs.append(weakref.ref(p := Payload(load(url)))) or p)
    alive = []

    def watch(step, total, record):
        gc.collect()
        alive.append(refs[0]() is not None)

    run_train(_params(data, run_name="release", checkpoint_every=2), progress=watch)
    assert refs and alive and not any(alive)  # ~1.8 GB for ViT-B-16: not held through the run
