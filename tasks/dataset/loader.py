"""Stream a split's shards into batches: DDP- and worker-aware, shuffled, deterministic, resumable.

How an epoch is laid out (everything is a function of seed, epoch, rank and worker count):
1. The split's row groups are permuted (training) or kept in order (evaluation) and seen as one
   row sequence. Rank r takes a contiguous slice of it (training: exactly N // world_size rows
   each, so every rank runs the same number of steps), and DataLoader worker w of that rank a
   contiguous slice of the rank's. Slices follow row-group boundaries except where a boundary
   must be cut, so workers read disjoint row groups apart from at most one shared at each end.
2. A worker streams its rows through a shuffle buffer into the batch builder (at most one image
   per proposal per batch in training) and decodes/augments only the batches it yields.
3. The DataLoader takes batches from its workers in turn, so the global batch order is known:
   a position saved by `state_dict()` maps back to how many batches each worker had delivered,
   and on resume each worker regenerates and skips those without decoding a single image.

Training workers cycle over their rows so each delivers its exact quota of full batches; the
epoch length is fixed in advance (`len(loader)`).

With DataLoader workers, a training loader keeps the same worker processes from one epoch to
the next: each worker goes on to its share of the next epoch by itself. Starting workers costs a
fork of the (large, CUDA-holding) training process per worker, measured at about 2 s per epoch
for 14 workers on an H100 box, which starved a batch-256 step when each epoch was short. Workers
whose quota is one batch short in an epoch send a padding marker instead, so the DataLoader's
strict turn order still lines every epoch up with its first worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from pydantic import ValidationError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from schemas.dataset import LoaderParams
from schemas.errors import InputError, validation_reasons
from storage.fs import open_fs
from tasks.dataset.augment import DecodedCache, augment_batch, draw_params
from tasks.dataset.batch import Batch
from tasks.dataset.sampler import ProposalBatcher, Row, shuffle_rows
from tasks.dataset.text import choose_caption, tokenize
from tasks.dataset.versions import DatasetVersion, ShardInfo, check_shard_schema

log = logging.getLogger(__name__)

_COLUMNS = ["obsid", "proposal_id", "caption_summary", "caption_abstract", "image"]


class EpochPad:
    """Sent by a worker whose quota is one batch short in an epoch; ShardLoader drops it."""

    __slots__ = ()


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of one row group of one shard."""

    shard: int
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def row_group_segments(shards: Sequence[ShardInfo]) -> list[Segment]:
    return [Segment(i, g, 0, n) for i, shard in enumerate(shards) for g, n in enumerate(shard.row_groups) if n]


def take_rows(segments: Sequence[Segment], begin: int, end: int) -> list[Segment]:
    """The segments covering rows [begin, end) of the concatenated sequence, cut at the ends."""
    out, offset = [], 0
    for seg in segments:
        lo, hi = max(begin, offset), min(end, offset + seg.rows)
        if lo < hi:
            out.append(Segment(seg.shard, seg.row_group, seg.start + lo - offset, seg.start + hi - offset))
        offset += seg.rows
        if offset >= end:
            break
    return out


def _slice(total: int, parts: int, index: int) -> tuple[int, int]:
    return total * index // parts, total * (index + 1) // parts


def consumed_per_worker(position: int, counts: Sequence[int]) -> tuple[list[int], int]:
    """How many batches each worker had delivered when the DataLoader had yielded `position`, and
    which worker delivers the next one. The DataLoader takes one batch from each worker in turn,
    skipping workers that are done."""
    consumed = [0] * len(counts)
    remaining, last = position, -1
    while remaining > 0:
        progressed = False
        for w, count in enumerate(counts):
            if remaining and consumed[w] < count:
                consumed[w] += 1
                remaining -= 1
                progressed, last = True, w
        if not progressed:
            break
    n = len(counts)
    following = [(last + 1 + i) % n for i in range(n)]
    upcoming = next((w for w in following if consumed[w] < counts[w]), 0)
    return consumed, upcoming


class ShardDataset(IterableDataset):
    """The per-worker batch stream. Use through ShardLoader (make_loader), which owns the state."""

    def __init__(self, shards: Sequence[ShardInfo], params: LoaderParams, tokenizer: Any, *, rank: int,
                 world_size: int, stored_size: int):
        super().__init__()
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is outside world_size {world_size}")
        self.shards = list(shards)
        self.params = params
        self.tokenizer = tokenizer
        self.rank = rank
        self.world_size = world_size
        self.side = params.resize_to or stored_size
        self.resize_to = params.resize_to if params.resize_to not in (None, stored_size) else None
        if params.image_size > self.side:
            raise InputError(f"image_size {params.image_size} is larger than the images ({self.side} px)")
        self.total_rows = sum(s.rows for s in self.shards)
        self.epoch = 0
        self.position = 0  # global batches to skip at the start of the next iteration
        self.continuous = False  # set by ShardLoader: go on to the next epochs, with EpochPad markers
        # Resized images only (full-size ones are 768 KB each); one cache per loader process. Not
        # for evaluation loaders with workers: those processes end with each pass.
        keeps_processes = params.is_train or params.num_workers == 0
        self.decoded = (DecodedCache(params.decoded_cache_mb << 20)
                        if self.resize_to is not None and params.decoded_cache_mb and keeps_processes else None)
        self.decode_failures = 0

    # -- layout ------------------------------------------------------------------------------
    def rank_range(self) -> tuple[int, int]:
        if self.params.is_train:
            per_rank = self.total_rows // self.world_size
            return self.rank * per_rank, (self.rank + 1) * per_rank
        return _slice(self.total_rows, self.world_size, self.rank)

    def worker_counts(self, num_workers: int) -> list[int]:
        """Batches each worker delivers per epoch."""
        begin, end = self.rank_range()
        rows = end - begin
        size = self.params.batch_size
        if self.params.is_train:
            batches = rows // size if self.params.drops_last else math.ceil(rows / size)
            if batches == 0:
                raise InputError(f"split {self.params.split!r} has {self.total_rows} rows: too few for batches of "
                                 f"{size} on {self.world_size} rank(s)")
            return [batches // num_workers + (1 if w < batches % num_workers else 0) for w in range(num_workers)]
        counts = []
        for w in range(num_workers):
            lo, hi = _slice(rows, num_workers, w)
            n = hi - lo
            counts.append(n // size if self.params.drops_last else math.ceil(n / size))
        return counts

    def worker_segments(self, worker: int, num_workers: int, epoch: int | None = None) -> list[Segment]:
        epoch = self.epoch if epoch is None else epoch
        segments = row_group_segments(self.shards)
        if self.params.is_train:
            order = np.random.default_rng([self.params.seed, epoch, 0xC0FFEE]).permutation(len(segments))
            segments = [segments[i] for i in order]
        begin, end = self.rank_range()
        lo, hi = _slice(end - begin, num_workers, worker)
        if hi == lo and self.params.is_train:
            lo, hi = 0, end - begin  # a tiny split: more workers than rows; share the rank's rows
        return take_rows(segments, begin + lo, begin + hi)

    # -- reading -----------------------------------------------------------------------------
    def _rows(self, segments: Sequence[Segment], cycle: bool) -> Iterator[Row]:
        files: dict[int, pq.ParquetFile] = {}
        handles = []
        try:
            while True:
                for seg in segments:
                    if seg.shard not in files:
                        fs, path = open_fs(self.shards[seg.shard].url)
                        handle = fs.open(path, "rb")
                        handles.append(handle)
                        files[seg.shard] = pq.ParquetFile(handle)
                        check_shard_schema(files[seg.shard].schema_arrow, f"dataset shard {self.shards[seg.shard].url}")
                    table = files[seg.shard].read_row_group(seg.row_group, columns=_COLUMNS)
                    table = table.slice(seg.start, seg.rows)
                    images = table.column("image").combine_chunks().field("bytes").to_pylist()
                    yield from map(Row, table.column("obsid").to_pylist(), table.column("proposal_id").to_pylist(),
                                   table.column("caption_summary").to_pylist(),
                                   table.column("caption_abstract").to_pylist(), images)
                if not cycle or not segments:
                    return
        finally:
            for handle in handles:
                handle.close()

    # -- batches -----------------------------------------------------------------------------
    def _make_batch(self, rows: list[Row], worker: int, index: int, epoch: int) -> Batch:
        p = self.params
        rng = np.random.default_rng([p.seed, epoch, self.rank, worker, 1, index])
        captions = [choose_caption(r.caption_summary, r.caption_abstract,
                                   p.caption_source if r.caption_summary else "abstract", rng, p.max_words)
                    for r in rows]
        tokens = tokenize(captions, self.tokenizer) if self.tokenizer is not None else None
        params = draw_params(rng, len(rows), self.side, p.image_size, p.is_train)
        jpegs = [r.jpeg for r in rows]
        common = dict(tokens=tokens, proposal_ids=[r.proposal_id for r in rows], obsids=[r.obsid for r in rows],
                      captions=captions, jpegs=jpegs if p.include_jpeg else None, crop=p.image_size,
                      resize_to=self.resize_to)
        if p.decode_device == "cuda":
            encoded = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
            return Batch(images=None, encoded=encoded, params=torch.from_numpy(params), **common)
        images, failures = augment_batch(jpegs, params, p.image_size, self.resize_to, cache=self.decoded,
                                         keys=common["obsids"])
        self.decode_failures += failures
        return Batch(images=images, **common)

    def __iter__(self) -> Iterator[Batch | EpochPad]:
        info = get_worker_info()
        slot, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        counts = self.worker_counts(num_workers)
        consumed, upcoming = consumed_per_worker(self.position, counts)
        # A new DataLoader asks worker 0 first: after a resume, that slot plays the (logical) worker
        # whose batch comes next, and the others follow in the same rotation.
        worker = (slot + upcoming) % num_workers
        skip = consumed[worker]
        epoch = self.epoch
        while True:
            yield from self._epoch_batches(worker, num_workers, counts[worker], skip, epoch)
            if not self.continuous:
                return
            # Pads sit at the very end of an epoch (its last round), so the next epoch's first batch
            # comes from logical worker 0 again, whatever slot that is.
            yield from (EpochPad() for _ in range(max(counts) - counts[worker]))
            epoch, skip = epoch + 1, 0

    def _epoch_batches(self, worker: int, num_workers: int, count: int, skip: int, epoch: int) -> Iterator[Batch]:
        p = self.params
        segments = self.worker_segments(worker, num_workers, epoch)
        rows = self._rows(segments, cycle=p.is_train)
        if p.is_train:
            rng = np.random.default_rng([p.seed, epoch, self.rank, worker, 0])
            rows = shuffle_rows(rows, p.shuffle_buffer, rng)
        batcher = ProposalBatcher(p.batch_size, p.proposal_unique)
        batches = islice(batcher.batches(rows, drop_last=p.drops_last), count)
        for index, group in enumerate(batches):
            if index < skip:
                continue  # already delivered before the checkpoint: regenerate, never decode
            yield self._make_batch(group, worker, index, epoch)


def _identity(batch: Batch) -> Batch:
    return batch


class ShardLoader:
    """Iterate for one epoch of batches; iterating again continues with the next epoch.

    `state_dict()` after any batch and `load_state_dict()` in a fresh process resume with the
    next batch. Resuming there needs the same seed, world size, worker count and batch size; a
    state saved under another layout restarts the interrupted epoch from its first batch.
    """

    def __init__(self, dataset: ShardDataset, version: str = ""):
        self.dataset = dataset
        self.params = dataset.params
        self.version = version
        self.epoch = 0
        self.position = 0
        # Training with workers: one DataLoader iterator lives across epochs (module docstring).
        self._live: Iterator[Batch | EpochPad] | None = None
        self._live_at: tuple[int, int] | None = None  # the (epoch, position) it delivers next

    def __len__(self) -> int:
        return sum(self.dataset.worker_counts(max(1, self.params.num_workers)))

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch at the next iteration."""
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.params.seed,
                "world_size": self.dataset.world_size, "rank": self.dataset.rank,
                "num_workers": self.params.num_workers, "batch_size": self.params.batch_size,
                "split": self.params.split, "version": self.version, "epoch_batches": len(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        layout = ("seed", "world_size", "num_workers", "batch_size", "split")
        mine = self.state_dict()
        changed = {k: (state.get(k), mine[k]) for k in layout if state.get(k) != mine[k]}
        if state.get("version") and self.version and state["version"] != self.version:
            changed["version"] = (state["version"], self.version)
        self.epoch = int(state["epoch"])
        if changed:
            # The epoch's layout depends on these: the saved position means nothing under new ones.
            # Restarting the interrupted epoch (rather than going on to the next) never skips its
            # unseen rows; the ones seen before the interruption come round once more. A state
            # saved after an epoch's last batch interrupted nothing: the next epoch starts.
            ended = "epoch_batches" in state and int(state["position"]) >= int(state["epoch_batches"])
            self.epoch, self.position = self.epoch + int(ended), 0
            log.warning("loader state was saved with %s; starting epoch %d from its first batch "
                        "instead of epoch %d batch %d", changed, self.epoch, int(state["epoch"]), state["position"])
        else:
            self.position = int(state["position"])

    def close(self) -> None:
        """Stop the worker processes kept across epochs (they also stop when the loader is freed)."""
        self._live, self._live_at = None, None

    def __iter__(self) -> Iterator[Batch]:
        p = self.params
        if p.num_workers == 0 or not p.is_train:
            self.close()
            yield from self._one_epoch()
            return
        if self._live is None or self._live_at != (self.epoch, self.position):
            # First use, or moved by set_epoch / load_state_dict / an epoch left unfinished.
            self.close()
            self.dataset.epoch, self.dataset.position, self.dataset.continuous = self.epoch, self.position, True
            self._live = iter(self._data_loader())
        live, total = self._live, len(self)
        self._live_at = None  # not resumable from here unless this epoch runs to its end
        while self.position < total:
            item = next(live)
            # Pads come only in an epoch's last round, after every batch of it (module docstring).
            assert not isinstance(item, EpochPad), "worker turn order lost: a pad before the epoch's last batch"
            self.position += 1
            yield item
        # The epoch's trailing pads, if any, come before the next epoch's first batch: take them now.
        for _ in range(self._pads_per_epoch()):
            item = next(live)
            assert isinstance(item, EpochPad), "worker turn order lost: a batch where a pad was due"
        self.epoch, self.position = self.epoch + 1, 0
        self._live_at = (self.epoch, self.position)

    def _pads_per_epoch(self) -> int:
        counts = self.dataset.worker_counts(self.params.num_workers)
        return max(counts) * len(counts) - sum(counts)

    def _data_loader(self) -> DataLoader:
        p = self.params
        return DataLoader(self.dataset, batch_size=None, num_workers=p.num_workers, collate_fn=_identity,
                          pin_memory=p.pin_memory, prefetch_factor=p.prefetch_factor, persistent_workers=False)

    def _one_epoch(self) -> Iterator[Batch]:
        self.dataset.epoch, self.dataset.position, self.dataset.continuous = self.epoch, self.position, False
        source: Any = self._data_loader() if self.params.num_workers > 0 else self.dataset
        for batch in source:
            self.position += 1
            yield batch
        self.epoch, self.position = self.epoch + 1, 0


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def make_loader(version: DatasetVersion, split: str = "train", tokenizer: Any = None, *,
                params: LoaderParams | None = None, rank: int | None = None, world_size: int | None = None,
                **options: Any) -> ShardLoader:
    """A ShardLoader over one split of an opened dataset version.

    `params` (a LoaderParams) or keyword options (its fields: batch_size, image_size, resize_to,
    caption_source, seed, num_workers, ...). rank/world_size default to torch.distributed's.
    tokenizer: e.g. open_clip.get_tokenizer("ViT-B-16"); None yields batches without tokens.
    """
    try:
        if params is None:
            params = LoaderParams(split=split, **options)
        elif options:
            params = params.model_copy(update=options)
    except ValidationError as err:
        raise InputError(f"loader options: {validation_reasons(err)}") from None
    default_rank, default_world = _distributed()
    rank = default_rank if rank is None else rank
    world_size = default_world if world_size is None else world_size
    shards = version.shards(params.split)
    if not shards:
        raise InputError(f"dataset {version.version} has no {params.split!r} examples")
    stored = int(version.config.get("image_size", 512))
    dataset = ShardDataset(shards, params, tokenizer, rank=rank, world_size=world_size, stored_size=stored)
    return ShardLoader(dataset, version=version.version)
