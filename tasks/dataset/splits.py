"""Train/val/test splits by proposal, never by image.

A proposal's split is a pure function of its id and a salt (plus its cycle in 'cycle' mode), so
no proposal lands on two sides, the split is reproducible anywhere, and ingesting a new cycle
never moves a proposal that was already assigned.
"""

from __future__ import annotations

import hashlib

from schemas.dataset import BuildDatasetParams, Split


def proposal_unit(proposal_id: str, salt: str) -> float:
    """A uniform number in [0, 1) drawn from sha256(salt, proposal id): stable across machines."""
    digest = hashlib.sha256(f"{salt}\x00{proposal_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_split(proposal_id: str, salt: str, train_fraction: float, val_fraction: float) -> Split:
    u = proposal_unit(proposal_id, salt)
    if u < train_fraction:
        return "train"
    if u < train_fraction + val_fraction:
        return "val"
    return "test"


def cycle_split(proposal_id: str, cycle: int, salt: str, cutoff: int, train_fraction: float,
                val_fraction: float) -> Split:
    """Train and val on cycles <= cutoff (val drawn by hash, in the train:val ratio), test after it."""
    if cycle > cutoff:
        return "test"
    u = proposal_unit(proposal_id, salt)
    return "train" if u < train_fraction / (train_fraction + val_fraction) else "val"


def assign_split(proposal_id: str, cycle: int, params: BuildDatasetParams) -> Split:
    if params.split_mode == "cycle":
        assert params.cycle_cutoff is not None  # checked by BuildDatasetParams
        return cycle_split(proposal_id, cycle, params.split_salt, params.cycle_cutoff,
                           params.train_fraction, params.val_fraction)
    return hash_split(proposal_id, params.split_salt, params.train_fraction, params.val_fraction)


def row_order_key(obsid: str, salt: str) -> bytes:
    """Shards store rows in this pseudo-random order, so a row group mixes many proposals and a
    modest shuffle buffer suffices at load time."""
    return hashlib.sha256(f"{salt}\x00row\x00{obsid}".encode()).digest()[:8]
