"""Checkpoints and exports: atomic files that open_clip itself loads, and exact training state."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import open_clip
import pytest
import torch

from schemas.errors import InputError
from tasks.train.checkpoint import (
    capture_rng,
    checkpoint_bytes,
    load_checkpoint,
    prune_step_checkpoints,
    restore_model,
    restore_rng,
    step_checkpoints,
    write_checkpoint,
)
from tasks.train.export import WEIGHTS_FILE, export_model, load_trained
from tasks.train.model import TINY_MODEL, create_clip
from tasks.train.wise_ft import interpolate_state_dicts


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _perturbed(model: torch.nn.Module, amount: float) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(amount)
    return model


def test_a_training_checkpoint_loads_with_open_clips_own_factory(tiny_config, tmp_path):
    model = _perturbed(create_clip(tiny_config()).model, 0.01)
    url = str(tmp_path / "step_3.pt")
    data = checkpoint_bytes(model=model, optimizer=None, scheduler=None, step=3)
    assert write_checkpoint(url, data) == hashlib.sha256(data).hexdigest()
    reloaded, _, _ = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=url)
    assert _same_weights(model, reloaded)
    assert load_checkpoint(url)["step"] == 3


def test_an_exported_model_loads_by_name_and_path_by_local_dir_and_by_load_trained(tiny_config, tmp_path):
    created = create_clip(tiny_config())
    model = _perturbed(created.model, 0.02)
    final = str(tmp_path / "run" / "final")
    sha = export_model(final, model, model_name=TINY_MODEL, model_cfg=created.model_cfg,
                       preprocess_cfg=created.preprocess_cfg, meta={"step": 5})
    assert sha == hashlib.sha256((tmp_path / "run" / "final" / WEIGHTS_FILE).read_bytes()).hexdigest()
    by_path, _, _ = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=f"{final}/{WEIGHTS_FILE}")
    by_dir, _, _ = open_clip.create_model_and_transforms(f"local-dir:{final}")
    assert _same_weights(model, by_path) and _same_weights(model, by_dir)

    model_, tokenizer, preprocess, checkpoint_sha = load_trained(str(tmp_path / "run"))
    assert checkpoint_sha == sha and not model_.training and _same_weights(model, model_)
    assert tokenizer(["a galaxy"]).shape == (1, 32)
    from PIL import Image

    assert preprocess(Image.new("RGB", (512, 512))).shape == (3, 64, 64)


def test_the_head_variant_round_trips_and_wise_ft_interpolates(tiny_config, tmp_path):
    base_cfg = tiny_config()
    base = create_clip(base_cfg).model
    path = tmp_path / "pre.pt"
    torch.save({"state_dict": base.state_dict()}, path)
    created = create_clip(tiny_config(pretrained=str(path), head="mlp", head_hidden=16))
    run = tmp_path / "run"
    export_model(str(run / "base"), created.model, model_name=TINY_MODEL, model_cfg=created.model_cfg,
                 preprocess_cfg=created.preprocess_cfg, meta={})
    tuned = _perturbed(created.model, 0.05)
    export_model(str(run / "final"), tuned, model_name=TINY_MODEL, model_cfg=created.model_cfg,
                 preprocess_cfg=created.preprocess_cfg, meta={})
    loaded = load_trained(str(run))
    assert _same_weights(tuned, loaded.model)
    assert loaded.info["head"] and loaded.info["head_hidden"] == 16

    zero = load_trained(str(run), wise_ft_alpha=0.0).model
    one = load_trained(str(run), wise_ft_alpha=1.0).model
    half = load_trained(str(run), wise_ft_alpha=0.5)
    assert _same_weights(one, tuned)
    assert torch.equal(zero.state_dict()["base.visual.conv1.weight"], base.state_dict()["visual.conv1.weight"])
    mid = half.model.state_dict()["image_head.fc2.weight"]
    assert torch.allclose(mid, torch.full_like(mid, 0.025))
    assert half.checkpoint_sha256 != loaded.checkpoint_sha256
    with pytest.raises(InputError, match="alpha"):
        interpolate_state_dicts(base.state_dict(), base.state_dict(), 1.5)


def test_bad_checkpoints_are_input_errors_naming_the_file(tiny_config, tmp_path):
    with pytest.raises(InputError, match="missing.pt does not exist"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="junk.pt cannot be read"):
        load_checkpoint(str(tmp_path / "junk.pt"))
    tiny = create_clip(tiny_config()).model
    payload = {"state_dict": {k: v for k, v in tiny.state_dict().items() if k != "logit_scale"}}
    with pytest.raises(InputError, match="last.pt does not fit the model"):
        restore_model(tiny, payload, source="last.pt")


def test_old_step_checkpoints_are_pruned(tmp_path):
    for step in (10, 20, 30, 40):
        write_checkpoint(str(tmp_path / f"step_{step}.pt"), b"x")
    (tmp_path / "last.pt").write_bytes(b"x")
    prune_step_checkpoints(str(tmp_path), keep=2)
    assert [s for s, _ in step_checkpoints(str(tmp_path))] == [30, 40]
    assert (tmp_path / "last.pt").exists()


def test_rng_state_round_trips():
    state = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_a_tensor_lr_stays_the_same_tensor_through_a_save_and_restore(tmp_path):
    # With cuda_graphs the lr is a CUDA tensor the scheduler updates in place and the captured graph
    # reads by address. load_checkpoint reads onto the CPU; a plain optimizer.load_state_dict would
    # swap in that CPU tensor, which fused AdamW reads once as a number: the graph captured after a
    # resume would then train at a frozen lr. Here (CPU) the mechanism: the very tensor survives.
    from tasks.train.checkpoint import restore_training_state
    from tasks.train.schedule import create_optimizer, create_scheduler

    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 4)
        optimizer = create_optimizer(model, lr=1e-3, weight_decay=0.1, capturable=True)
        return model, optimizer, create_scheduler(optimizer, warmup_steps=10, total_steps=20, kind="cosine")

    model, optimizer, scheduler = make()
    for _ in range(3):
        scheduler.step()  # lr moves to 4/10 of the base rate; no optimizer step (capturable needs a GPU)
    saved_lr = [float(g["lr"]) for g in optimizer.param_groups]
    url = str(tmp_path / "last.pt")
    write_checkpoint(url, checkpoint_bytes(model=model, optimizer=optimizer, scheduler=scheduler, step=3))

    model2, optimizer2, scheduler2 = make()
    tensors = [g["lr"] for g in optimizer2.param_groups]
    assert all(isinstance(t, torch.Tensor) for t in tensors)
    restore_training_state(load_checkpoint(url), model=model2, optimizer=optimizer2, scheduler=scheduler2)
    assert all(g["lr"] is t for g, t in zip(optimizer2.param_groups, tensors, strict=True))
    assert [float(t) for t in tensors] == saved_lr
    scheduler2.step()  # and the scheduler keeps writing into that same tensor
    assert all(g["lr"] is t for g, t in zip(optimizer2.param_groups, tensors, strict=True))
    assert float(tensors[0]) == pytest.approx(saved_lr[0] * 5 / 4)


class _FakeCuda:
    """torch.cuda's RNG calls on a machine with `gpus` GPUs, the current one being cuda:0."""

    def __init__(self, gpus: int):
        self.gpus = gpus
        self.set_calls: list[torch.Tensor] = []

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.gpus)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full((8,), 7, dtype=torch.uint8))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all",
                            lambda: [torch.full((8,), i, dtype=torch.uint8) for i in range(self.gpus)])
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": self.set_calls.append(state))

        def set_all(states):  # what torch does: one generator per listed GPU, IndexError past the last
            if len(states) > self.gpus:
                raise IndexError("tuple index out of range")
            self.set_calls.extend(states)

        monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def test_the_cuda_rng_state_is_this_gpus_only_and_old_per_gpu_lists_restore_on_fewer_gpus(monkeypatch):
    # CUDA-only in production; the torch.cuda calls are faked so the bookkeeping runs on CPU.
    saving = _FakeCuda(gpus=4)
    saving.install(monkeypatch)
    state = capture_rng()
    assert isinstance(state["cuda"], torch.Tensor)  # one state, not one per visible GPU

    resuming = _FakeCuda(gpus=1)
    resuming.install(monkeypatch)
    restore_rng(state)
    assert len(resuming.set_calls) == 1 and torch.equal(resuming.set_calls[0], state["cuda"])

    old = {**state, "cuda": [torch.full((8,), i, dtype=torch.uint8) for i in range(4)]}  # an older checkpoint
    resuming.set_calls.clear()
    restore_rng(old)  # saved on 4 GPUs, restored on 1: no IndexError, cuda:0 gets its own entry
    assert len(resuming.set_calls) == 1 and torch.equal(resuming.set_calls[0], old["cuda"][0])


def test_load_trained_removes_its_temporary_copy_of_a_remote_model(tiny_config, tmp_path, monkeypatch):
    import tempfile
    import uuid

    created = create_clip(tiny_config())
    remote = f"memory://hubbleclip-{uuid.uuid4().hex}/run"
    for which in ("base", "final"):
        export_model(f"{remote}/{which}", created.model, model_name=TINY_MODEL, model_cfg=created.model_cfg,
                     preprocess_cfg=created.preprocess_cfg, meta={})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert _same_weights(load_trained(remote).model, created.model)
    assert _same_weights(load_trained(remote, wise_ft_alpha=0.5).model, created.model)
    assert list(scratch.iterdir()) == []
