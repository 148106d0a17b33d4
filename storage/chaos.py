"""Deterministic kill points for the reliability suite (tests/chaos, docs/reliability.md).

`HUBBLECLIP_CHAOS_KILL_AT=POINT[@PATTERN][#N]` makes the process SIGKILL itself the N-th time
(default 1) it reaches `POINT` with a subject matching the fnmatch `PATTERN` (default: any):

    fs.tmp_written@*/tables/previews/_manifest.json    a manifest's bytes are on disk under a
                                                        temporary name, not yet renamed
    fs.committed@*/checkpoints/last.pt#2                the second last.pt has just been renamed

Unset (production), `maybe_die` is one dictionary lookup. It lives in storage/ because every
commit point of every stage is a storage write; stage code may call it too (tasks.chaos_points).
A kill is SIGKILL, not an exception: nothing runs after it (no finally, no atexit), exactly as
when the OOM killer or a preempted node ends a run.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import threading
from collections import Counter

KILL_ENV = "HUBBLECLIP_CHAOS_KILL_AT"

_hits: Counter[str] = Counter()
_lock = threading.Lock()


def parse_kill_spec(spec: str) -> tuple[str, str, int]:
    """(point, subject pattern, occurrence) of a HUBBLECLIP_CHAOS_KILL_AT value."""
    spec = spec.strip()
    occurrence = 1
    if "#" in spec:
        spec, _, count = spec.rpartition("#")
        occurrence = int(count)
        if occurrence < 1:
            raise ValueError(f"{KILL_ENV}: the occurrence after '#' must be >= 1, got {count}")
    point, _, pattern = spec.partition("@")
    if not point:
        raise ValueError(f"{KILL_ENV}: no point name in {spec!r}")
    return point, pattern or "*", occurrence


def maybe_die(point: str, subject: str = "") -> None:
    """SIGKILL this process if HUBBLECLIP_CHAOS_KILL_AT names this point (and subject, and count)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    wanted, pattern, occurrence = parse_kill_spec(spec)
    if wanted != point or not fnmatch.fnmatchcase(subject, pattern):
        return
    with _lock:
        _hits[spec] += 1
        due = _hits[spec] == occurrence
    if due:
        os.kill(os.getpid(), signal.SIGKILL)
