"""The training loop on synthetic tensors: it learns, it resumes exactly, the control stays at chance."""

from __future__ import annotations

import io
import math

import pytest
import torch

from tasks.train.batches import BatchStream
from tasks.train.checkpoint import checkpoint_bytes, restore_training_state
from tasks.train.distributed import DistInfo
from tasks.train.loop import FitState, Trainer, fit
from tasks.train.model import create_clip
from tasks.train.stage import seed_everything
from tests.tasks.train.synthetic import SyntheticPairs


class MemoryRun:
    """Callbacks that keep metrics and checkpoints in memory (the stage writes files instead)."""

    def __init__(self):
        self.records: list[tuple[int, dict]] = []
        self.checkpoints: dict[int, bytes] = {}
        self.best: list[int] = []

    def log_metrics(self, step, record):
        self.records.append((step, record))

    def save_checkpoint(self, trainer, state, stream, *, periodic, best):
        data = checkpoint_bytes(model=trainer.raw_model, optimizer=trainer.optimizer, scheduler=trainer.scheduler,
                                step=state.step, loader_state=stream.state_dict(), best=state.as_dict())
        if periodic:
            self.checkpoints[state.step] = data
        if best:
            self.best.append(state.step)

    def train_losses(self):
        return [r["loss"] for _, r in self.records if r["split"] == "train"]

    def val(self):
        return [r for _, r in self.records if r["split"] == "val"]


def _trainer(cfg):
    seed_everything(cfg.seed)
    created = create_clip(cfg, "cpu")
    return Trainer(created.model, cfg, DistInfo(), mean=created.preprocess_cfg["mean"],
                   std=created.preprocess_cfg["std"])


def _val_source(tokenizer):
    held_out = SyntheticPairs(tokenizer, n=200, batch_size=100, seed=99, shuffle=False)
    return lambda: iter(held_out)


def test_tiny_model_learns_the_synthetic_pairs(tiny_config, tiny_tokenizer):
    cfg = tiny_config(steps=40, val_every=40, checkpoint_every=40, log_every=5)
    trainer = _trainer(cfg)
    run = MemoryRun()
    stream = BatchStream(SyntheticPairs(tiny_tokenizer, n=512, batch_size=32, seed=1))
    state = fit(trainer, stream, state=FitState(), callbacks=run, val_batches=_val_source(tiny_tokenizer))
    losses = run.train_losses()
    assert state.step == 40
    assert losses[-1] < losses[0] - 0.5, losses
    (val,) = run.val()
    # Chance is 0.10; held-out pairs are retrieved far better after 40 steps.
    assert val["top10pct_image_to_text"] > 0.3, val
    assert run.best == [40]


def test_shuffled_pairs_control_stays_at_chance(tiny_config, tiny_tokenizer):
    cfg = tiny_config(steps=40, val_every=40, checkpoint_every=40, shuffled_pairs=True)
    trainer = _trainer(cfg)
    run = MemoryRun()
    stream = BatchStream(SyntheticPairs(tiny_tokenizer, n=512, batch_size=32, seed=1))
    fit(trainer, stream, state=FitState(), callbacks=run, val_batches=_val_source(tiny_tokenizer))
    (val,) = run.val()
    assert val["top10pct_image_to_text"] < 0.2, val
    assert val["top10pct_text_to_image"] < 0.2, val


def test_resume_from_a_mid_run_checkpoint_matches_an_uninterrupted_run(tiny_config, tiny_tokenizer):
    cfg = tiny_config(steps=12, checkpoint_every=5, val_every=1000, log_every=4)

    def source():
        # 96 pairs of 32: an epoch boundary falls inside the run, so the loader position matters.
        return SyntheticPairs(tiny_tokenizer, n=96, batch_size=32, seed=3)

    straight = _trainer(cfg)
    fit(straight, BatchStream(source()), state=FitState(), callbacks=MemoryRun())

    first = _trainer(cfg)
    run = MemoryRun()
    fit(first, BatchStream(source()), state=FitState(), callbacks=run)
    payload = torch.load(io.BytesIO(run.checkpoints[5]), weights_only=True)

    torch.manual_seed(12345)  # a different process state: everything must come from the checkpoint
    resumed = _trainer(tiny_config(steps=12, checkpoint_every=5, val_every=1000, log_every=4, seed=0))
    with torch.no_grad():
        for p in resumed.raw_model.parameters():
            p.add_(1.0)  # the checkpoint must overwrite every weight
    step = restore_training_state(payload, model=resumed.raw_model, optimizer=resumed.optimizer,
                                  scheduler=resumed.scheduler)
    stream = BatchStream(source())
    stream.load_state_dict(payload["loader"])
    assert (step, stream.epoch, stream.index) == (5, 1, 2)
    fit(resumed, stream, state=FitState(step=step), callbacks=MemoryRun())

    for (name, a), b in zip(straight.raw_model.state_dict().items(), resumed.raw_model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert resumed.lr == straight.lr


def test_siglip_bf16_and_grad_checkpointing_variants_train(tiny_config, tiny_tokenizer):
    batch = next(iter(SyntheticPairs(tiny_tokenizer, n=32, batch_size=32, seed=4)))
    plain = _trainer(tiny_config(steps=8, warmup_steps=0))
    checkpointed = _trainer(tiny_config(steps=8, warmup_steps=0, grad_checkpointing=True))
    assert float(plain.train_step(batch, 0)) == pytest.approx(float(checkpointed.train_step(batch, 0)), abs=1e-5)

    siglip = _trainer(tiny_config(steps=8, warmup_steps=0, loss="siglip"))
    losses = [float(siglip.train_step(batch, step)) for step in range(6)]
    assert losses[-1] < losses[0]
    bf16 = _trainer(tiny_config(steps=8, warmup_steps=0, precision="bf16"))
    assert math.isfinite(float(bf16.train_step(batch, 0)))


def test_image_prep_normalises_uint8_with_the_models_stats_and_passes_float_through():
    from tasks.train.batches import ImagePrep

    mean, std = (0.5, 0.25, 0.125), (0.2, 0.3, 0.4)
    prep = ImagePrep(mean, std, torch.device("cpu"))
    images = torch.randint(0, 256, (2, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = prep.images(images)
    # The formula ImagePrep had before it called tasks.dataset.augment.normalize.
    expected = (images.float().div_(255.0) - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    already = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.equal(prep.images(already), already.float())  # float images are taken as normalised
    assert prep.images(already.bfloat16()).dtype == torch.float32


def test_unpack_hands_over_a_dataset_batchs_uint8_images_and_passes_triples_through():
    from tasks.dataset.batch import Batch
    from tasks.train.batches import unpack

    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    tokens = torch.ones(2, 77, dtype=torch.long)
    batch = Batch(images=images, tokens=tokens, proposal_ids=["p1", "p2"], obsids=["o1", "o2"], captions=["a", "b"])
    out_images, out_tokens, ids = unpack(batch, torch.device("cpu"))
    assert out_images.dtype == torch.uint8 and torch.equal(out_images, images)
    assert out_tokens is tokens and ids == ["p1", "p2"]
    triple = (images.float(), tokens, ["p1", "p2"])
    assert unpack(triple, torch.device("cpu")) is triple
    with pytest.raises(ValueError, match="no tokens"):
        unpack(batch._replace(tokens=None), torch.device("cpu"))
    with pytest.raises(ValueError, match="neither decoded images"):
        unpack(batch._replace(images=None), torch.device("cpu"))
