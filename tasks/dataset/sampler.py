"""Shuffling and batch building over a stream of rows.

Images of one proposal share one caption, so two of them in a contrastive batch are false
negatives: the batch builder takes at most one image per proposal per batch (on by default for
training). A row whose proposal is already in the batch waits in a small queue and goes into
the next batch that lacks its proposal. Everything here is deterministic given the rng.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)


class Row(NamedTuple):
    """What the loader keeps of an example between reading and decoding."""

    obsid: str
    proposal_id: str
    caption_summary: str
    caption_abstract: str
    jpeg: bytes


def shuffle_rows(rows: Iterable[Row], size: int, rng: np.random.Generator) -> Iterator[Row]:
    """A shuffle buffer of `size` rows (size 0 or 1: the input order)."""
    if size <= 1:
        yield from rows
        return
    buffer: list[Row] = []
    for row in rows:
        if len(buffer) < size:
            buffer.append(row)
            continue
        i = int(rng.integers(size))
        yield buffer[i]
        buffer[i] = row
    for i in rng.permutation(len(buffer)):
        yield buffer[int(i)]


class ProposalBatcher:
    """Groups rows into batches, optionally with at most one row per proposal per batch.

    `relaxed` counts the rows placed next to a sibling because no other proposal was left
    (the end of a tiny stream, or a stream of a single proposal): the batch still fills.
    """

    def __init__(self, batch_size: int, one_per_proposal: bool = True, max_waiting: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.one_per_proposal = one_per_proposal
        self.max_waiting = max_waiting if max_waiting is not None else 4 * batch_size
        self.relaxed = 0

    def batches(self, rows: Iterable[Row], drop_last: bool = False) -> Iterator[list[Row]]:
        if not self.one_per_proposal:
            batch: list[Row] = []
            for row in rows:
                batch.append(row)
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            if batch and not drop_last:
                yield batch
            return

        waiting: deque[Row] = deque()
        batch, seen = [], set()

        def place_waiting() -> None:
            for _ in range(len(waiting)):
                if len(batch) == self.batch_size:
                    return
                row = waiting.popleft()
                if row.proposal_id in seen:
                    waiting.append(row)
                else:
                    batch.append(row)
                    seen.add(row.proposal_id)

        for row in rows:
            if row.proposal_id in seen:
                waiting.append(row)
                if len(waiting) > self.max_waiting:
                    # The stream is dominated by a few proposals: fill with siblings rather than
                    # hold an ever-growing queue.
                    while len(batch) < self.batch_size and waiting:
                        batch.append(waiting.popleft())
                        self.relaxed += 1
            else:
                batch.append(row)
                seen.add(row.proposal_id)
            if len(batch) == self.batch_size:
                yield batch
                batch, seen = [], set()
                place_waiting()
        while waiting:
            place_waiting()
            if len(batch) < self.batch_size and waiting:
                # Only siblings of rows already in the batch remain.
                while len(batch) < self.batch_size and waiting:
                    batch.append(waiting.popleft())
                    self.relaxed += 1
            if len(batch) == self.batch_size:
                yield batch
                batch, seen = [], set()
        if batch and not drop_last:
            yield batch
        if self.relaxed:
            log.debug("proposal batcher: %d rows shared a batch with a sibling", self.relaxed)
