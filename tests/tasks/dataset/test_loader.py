"""The loader: DDP ranks and workers read disjoint rows, order is seeded, positions resume."""

import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from schemas.errors import InputError
from tasks.dataset import to_model_input
from tasks.dataset.loader import Segment, consumed_per_worker, take_rows


def make(built, split, tokenizer=None, **options):
    options.setdefault("image_size", 64)  # the fixture's previews are 128 px
    return built.make_loader(split, tokenizer, **options)


def _obsids(loader):
    return [b.obsids for b in loader]


def test_ranks_share_steps_and_never_rows_in_training(built):
    for world in (2, 3):
        epochs = [_obsids(make(built, "train", batch_size=4, seed=5, rank=r, world_size=world))
                  for r in range(world)]
        assert len({len(e) for e in epochs}) == 1 and len(epochs[0]) > 0  # same number of steps everywhere
        seen = [{o for batch in e for o in batch} for e in epochs]
        for a in range(world):
            for b in range(a + 1, world):
                assert not seen[a] & seen[b]


def test_evaluation_ranks_cover_every_row_exactly_once(built):
    every = built.read_metadata("val").column("obsid").to_pylist()
    got = Counter()
    for rank in range(3):
        for batch in make(built, "val", batch_size=5, rank=rank, world_size=3):
            got.update(batch.obsids)
    assert got == Counter(every)


def test_dataloader_workers_read_disjoint_rows(built):
    loader = make(built, "train", batch_size=4, seed=2, num_workers=2)
    batches = _obsids(loader)
    assert len(batches) == len(loader)
    # The DataLoader takes batches from its workers in turn: even batches are worker 0's.
    worker0 = {o for b in batches[0::2] for o in b}
    worker1 = {o for b in batches[1::2] for o in b}
    assert worker0 and worker1 and not worker0 & worker1
    eval_rows = Counter(o for b in make(built, "test", batch_size=3, num_workers=2) for o in b.obsids)
    assert eval_rows == Counter(built.read_metadata("test").column("obsid").to_pylist())


def test_order_and_augmentation_follow_seed_and_epoch(built):
    a = list(make(built, "train", batch_size=4, seed=7))
    b = list(make(built, "train", batch_size=4, seed=7))
    assert [x.obsids for x in a] == [y.obsids for y in b]
    assert all(torch.equal(x.images, y.images) for x, y in zip(a, b, strict=True))
    other_seed = _obsids(make(built, "train", batch_size=4, seed=8))
    assert other_seed != [x.obsids for x in a]
    loader = make(built, "train", batch_size=4, seed=7)
    first, second = _obsids(loader), _obsids(loader)  # iterating again is the next epoch
    assert first == [x.obsids for x in a] and second != first and loader.epoch == 2


def test_at_most_one_image_per_proposal_per_training_batch(built):
    loader = make(built, "train", batch_size=8, seed=3)
    for batch in loader:
        assert len(set(batch.proposal_ids)) == len(batch.proposal_ids) == 8
        assert loader.dataset.params.proposal_unique
    unconstrained = make(built, "train", batch_size=8, seed=3, one_per_proposal=False, shuffle_buffer=0)
    assert any(len(set(b.proposal_ids)) < 8 for b in unconstrained)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize(("workers", "batch_size", "offset"), [(0, 4, 3), (2, 4, 3), (3, 8, 10)])
def test_resuming_from_a_saved_position_continues_the_same_stream(built, tokenizer, workers, batch_size, offset):
    # (3, 8, 10): 11 batches per epoch from workers delivering 4, 4 and 3; batch 10 comes after
    # worker 2 is done, so the resumed DataLoader must start with the right worker.
    options = dict(batch_size=batch_size, seed=11, num_workers=workers, caption_source="abstract")
    reference = make(built, "train", tokenizer, **options)
    full = list(reference) + list(reference)  # two epochs, uninterrupted
    interrupted = make(built, "train", tokenizer, **options)
    stop = len(interrupted) + offset  # `offset` batches into the second epoch
    for _ in interrupted:  # the whole first epoch
        pass
    for step, _ in enumerate(interrupted, start=len(interrupted)):
        if step + 1 == stop:
            break
    state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["position"] == offset
    resumed = make(built, "train", tokenizer, **options)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert len(rest) == len(full) - stop
    for mine, theirs in zip(rest, full[stop:], strict=True):
        assert mine.obsids == theirs.obsids and mine.captions == theirs.captions
        assert torch.equal(mine.images, theirs.images) and torch.equal(mine.tokens, theirs.tokens)
    assert resumed.state_dict()["epoch"] == 2 and resumed.state_dict()["position"] == 0


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_training_workers_live_across_epochs_and_give_each_epoch_its_own_order(built, tokenizer, monkeypatch):
    # 11 batches per epoch from 3 workers delivering 4, 4 and 3: worker 2 sends a pad each epoch.
    options = dict(batch_size=8, seed=3, num_workers=3, caption_source="abstract")
    started = []
    original = type(make(built, "train", tokenizer, **options))._data_loader

    def counting(self):
        started.append(self.epoch)
        return original(self)

    long_lived = make(built, "train", tokenizer, **options)
    monkeypatch.setattr(type(long_lived), "_data_loader", counting)
    epochs = [[(b.obsids, b.captions) for b in long_lived] for _ in range(3)]
    assert started == [0]  # one set of worker processes for all three epochs
    assert len(long_lived) == 11 and [len(e) for e in epochs] == [11, 11, 11]
    for epoch, got in enumerate(epochs):
        fresh = make(built, "train", tokenizer, **options)
        fresh.set_epoch(epoch)
        assert got == [(b.obsids, b.captions) for b in fresh]  # the layout of a loader started at that epoch
    assert epochs[0] != epochs[1]  # and each epoch is reshuffled
    # An epoch left unfinished cannot be continued by the live workers: the next iteration starts over.
    started.clear()
    partial = iter(long_lived)
    next(partial)
    long_lived.set_epoch(5)
    assert [b.obsids for b in long_lived][:1] and started == [5]
    long_lived.close()


def test_the_decoded_image_cache_gives_the_same_batches(built, tokenizer):
    options = dict(batch_size=4, seed=9, resize_to=96, caption_source="abstract")
    cached, uncached = make(built, "train", tokenizer, **options), make(built, "train", tokenizer,
                                                                        decoded_cache_mb=0, **options)
    for _ in range(2):  # the second epoch reads from the cache
        for mine, theirs in zip(cached, uncached, strict=True):
            assert mine.obsids == theirs.obsids and torch.equal(mine.images, theirs.images)
    assert cached.dataset.decoded.images and uncached.dataset.decoded is None


def test_a_state_from_another_layout_restarts_the_interrupted_epoch(built):
    # docs/training.md and docs/dataset.md: the interrupted epoch starts again from its first batch
    # (its unseen rows are not skipped); a state saved at an epoch's end goes on to the next epoch.
    loader = make(built, "train", batch_size=4, world_size=2, rank=0)
    loader.load_state_dict({**loader.state_dict(), "epoch": 3, "position": 2, "world_size": 4})
    assert (loader.epoch, loader.position) == (3, 0)
    saved = make(built, "train", batch_size=4, world_size=4, rank=0)
    loader.load_state_dict({**saved.state_dict(), "epoch": 3, "position": len(saved)})
    assert (loader.epoch, loader.position) == (4, 0)
    loader.load_state_dict({**saved.state_dict(), "epoch": 3, "position": 2})
    assert (loader.epoch, loader.position) == (3, 0)


def test_evaluation_is_the_stored_order_with_centre_crops(built):
    loader = make(built, "val", batch_size=4, image_size=64, include_jpeg=True)
    batches = list(loader)
    assert [o for b in batches for o in b.obsids] == built.read_metadata("val").column("obsid").to_pylist()
    batch = batches[0]
    decoded = np.asarray(Image.open(io.BytesIO(batch.jpegs[0])).convert("RGB"))
    offset = (decoded.shape[0] - 64) // 2
    expected = torch.from_numpy(decoded[offset:offset + 64, offset:offset + 64].copy()).permute(2, 0, 1)
    assert torch.equal(batch.images[0], expected)
    assert batch.tokens is None and batch.captions[0]


def test_gpu_decode_path_matches_cpu_path(built):
    # decode_device='cuda' hands over JPEG bytes + drawn parameters; to_model_input decodes them on
    # the target device. Run on the CPU device here: the same code, the same crops and symmetries.
    cpu = list(make(built, "train", batch_size=4, seed=4, image_size=48))
    deferred = list(make(built, "train", batch_size=4, seed=4, image_size=48, decode_device="cuda"))
    assert deferred[0].images is None and deferred[0].params.shape == (4, 4)
    for a, b in zip(cpu, deferred, strict=True):
        images_a, _ = to_model_input(a, "cpu")
        images_b, _ = to_model_input(b, "cpu")
        assert torch.equal(images_a, images_b)


def test_too_small_split_for_the_batch_is_a_clear_error(built):
    with pytest.raises(InputError, match="too few"):
        make(built, "val", batch_size=10_000, train=True).__len__()
    with pytest.raises(InputError, match="larger than the images"):
        make(built, "train", image_size=512)


def test_bad_loader_options_are_an_input_error_naming_them(built):
    with pytest.raises(InputError, match=r"^loader options: resize_to \(32\) is smaller than image_size \(64\)$"):
        make(built, "train", resize_to=32)
    with pytest.raises(InputError, match="batch_size: Input should be greater than or equal to 1"):
        make(built, "train", batch_size=0)


def test_layout_helpers():
    segments = [Segment(0, 0, 0, 8), Segment(0, 1, 0, 8), Segment(1, 0, 0, 5)]
    assert take_rows(segments, 6, 17) == [Segment(0, 0, 6, 8), Segment(0, 1, 0, 8), Segment(1, 0, 0, 1)]
    assert consumed_per_worker(0, [3, 3]) == ([0, 0], 0)
    assert consumed_per_worker(7, [3, 3, 2]) == ([3, 2, 2], 1)
    assert consumed_per_worker(5, [3, 3, 1]) == ([2, 2, 1], 0)
    assert consumed_per_worker(4, [1, 3, 2]) == ([1, 2, 1], 2)
    assert consumed_per_worker(100, [1, 1]) == ([1, 1], 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_decoding_on_cuda_matches_cpu_decoding(built):
    cpu = next(iter(make(built, "train", batch_size=4, seed=4, image_size=48)))
    gpu = next(iter(make(built, "train", batch_size=4, seed=4, image_size=48, decode_device="cuda")))
    images_cpu, _ = to_model_input(cpu, "cpu")
    images_gpu, _ = to_model_input(gpu, "cuda")
    # nvJPEG and libjpeg-turbo may round a few values differently.
    assert (images_gpu.cpu() - images_cpu).abs().mean() < 0.05
