"""Validation's batches are built once per run and replayed, with the numbers a rebuilt loader gives."""

from __future__ import annotations

import pytest
import torch

from schemas.train import TrainParams
from tasks.train.batches import BatchStream
from tasks.train.data import VAL_KEEP_BYTES, CachedPasses, open_training_data
from tasks.train.distributed import DistInfo
from tasks.train.loop import FitState, Trainer, fit
from tasks.train.model import create_clip, get_tokenizer
from tasks.train.presets import resolve_config
from tasks.train.stage import seed_everything
from tests.tasks.train.conftest import build_small_dataset
from tests.tasks.train.synthetic import SyntheticPairs

SIZE = 80  # stored preview side: the tiny preset crops 64 px from it


class CountedSource:
    """A deterministic batch source that counts how often it is built and how far it is read."""

    def __init__(self, tokenizer, n: int = 350, batch_size: int = 100):
        self.pairs = SyntheticPairs(tokenizer, n=n, batch_size=batch_size, seed=5, shuffle=False)
        self.builds = 0
        self.yielded = 0

    def __call__(self):
        self.builds += 1
        for batch in self.pairs:
            self.yielded += 1
            yield batch


def _consume(passes, max_pairs: int) -> list:
    """Like Trainer.encode: take batches until max_pairs pairs, then stop."""
    taken, count = [], 0
    for batch in passes():
        taken.append(batch)
        count += batch[0].shape[0]
        if count >= max_pairs:
            break
    return taken


def _same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and list(x[2]) == list(y[2]) for x, y in zip(a, b, strict=True))


def test_the_first_pass_is_kept_and_replayed_up_to_max_pairs(tiny_tokenizer):
    source = CountedSource(tiny_tokenizer)
    passes = CachedPasses(source, max_pairs=200, max_bytes=VAL_KEEP_BYTES)
    first = _consume(passes, 200)
    assert source.yielded == 2  # not read past what validation uses
    again = _consume(passes, 200)
    assert source.builds == 1 and passes.builds == 1
    assert _same_batches(first, again)
    assert _same_batches(first, _consume(CountedSource(tiny_tokenizer), 200))  # what a rebuild gives


def test_a_source_shorter_than_max_pairs_is_kept_whole(tiny_tokenizer):
    source = CountedSource(tiny_tokenizer)
    passes = CachedPasses(source, max_pairs=1000, max_bytes=VAL_KEEP_BYTES)
    first = list(passes())
    assert len(first) == 3 and _same_batches(first, list(passes())) and source.builds == 1


def test_a_pass_over_the_byte_limit_is_rebuilt_every_time(tiny_tokenizer):
    source = CountedSource(tiny_tokenizer)
    one_batch = sum(t.nbytes for t in next(iter(source.pairs))[:2])
    passes = CachedPasses(source, max_pairs=300, max_bytes=2 * one_batch)  # three batches do not fit
    first = _consume(passes, 300)
    second = _consume(passes, 300)
    assert source.builds == 2 and len(first) == 3 and _same_batches(first, second)


def test_an_abandoned_first_pass_is_not_kept(tiny_tokenizer):
    source = CountedSource(tiny_tokenizer)
    passes = CachedPasses(source, max_pairs=300, max_bytes=VAL_KEEP_BYTES)
    next(iter(passes()))  # validation failed after one batch
    full = _consume(passes, 300)
    assert source.builds == 2 and len(full) == 3
    assert _same_batches(full, _consume(passes, 300)) and source.builds == 2


def _trainer(cfg):
    seed_everything(cfg.seed)
    created = create_clip(cfg, "cpu")
    return Trainer(created.model, cfg, DistInfo(), mean=created.preprocess_cfg["mean"],
                   std=created.preprocess_cfg["std"])


class Records:
    def __init__(self):
        self.val = []

    def log_metrics(self, step, record):
        if record["split"] == "val":
            self.val.append(record)

    def save_checkpoint(self, trainer, state, stream, *, periodic, best):
        pass


def test_fit_validates_with_the_numbers_of_a_rebuilt_source(tiny_config, tiny_tokenizer):
    cfg = tiny_config(steps=6, val_every=2, checkpoint_every=100, log_every=2, val_pairs=200)

    def run(val_batches):
        records = Records()
        stream = BatchStream(SyntheticPairs(tiny_tokenizer, n=128, batch_size=32, seed=1))
        fit(_trainer(cfg), stream, state=FitState(), callbacks=records, val_batches=val_batches)
        return records.val

    rebuilt_source, cached_source = CountedSource(tiny_tokenizer), CountedSource(tiny_tokenizer)
    rebuilt = run(rebuilt_source)
    cached = run(CachedPasses(cached_source, max_pairs=cfg.val_pairs, max_bytes=VAL_KEEP_BYTES))
    assert len(rebuilt) == 3 and rebuilt_source.builds == 3 and cached_source.builds == 1
    assert cached == rebuilt  # every validation's loss and retrieval, exactly


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_small_dataset(tmp_path_factory.mktemp("validation"), proposals=80, seed=4,
                               fractions=(0.4, 0.5, 0.1), size=SIZE)


def test_the_dataset_validation_passes_equal_a_fresh_loaders(dataset):
    data, version = dataset
    training = open_training_data(data, version)
    assert training.counts["val"] > 100  # more than one batch, and a partial last one
    cfg = resolve_config(TrainParams(data=data, preset="tiny", val_pairs=1000, device="cpu", workers=0,
                                     resize_to=None))
    tokenizer = get_tokenizer(cfg.model)
    built = []
    make_loader = training.dataset.make_loader
    training.dataset.make_loader = lambda *a, **k: built.append(1) or make_loader(*a, **k)

    val = training.val_batches(cfg, tokenizer, 64)
    first, second = list(val()), list(val())
    assert len(built) == 1
    fresh = list(make_loader("val", tokenizer=tokenizer, batch_size=100, image_size=64, resize_to=None,
                             caption_source=cfg.caption_source, seed=cfg.seed, num_workers=0,
                             one_per_proposal=True, rank=0, world_size=1))
    assert sum(b.size for b in fresh) == training.counts["val"]
    for kept in (first, second):
        assert len(kept) == len(fresh)
        for a, b in zip(kept, fresh, strict=True):
            assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)
            assert (a.proposal_ids, a.obsids, a.captions) == (b.proposal_ids, b.obsids, b.captions)
