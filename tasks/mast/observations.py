"""Public HST science images from CAOM, through `astroquery.mast.Observations.query_criteria`.

A query is never trusted to be complete (MAST has silently returned 50,000 of 159,994 rows,
astroquery issue 2788). So: count first (`query_criteria_count`); split the `t_obs_release`
window until every piece counts at most `max_rows_per_query` (far below MAST's ~500k ceiling);
after every query compare the rows received with the count, and treat a shortfall as an error:
the window is split in two and each half counted and queried again, down to `min_window_days`,
below which the run fails with a RemoteError rather than store a partial answer.

Rows arrive as a masked astropy Table: nulls are "" (strings), -999 (ints) or NaN (floats) and
become "" / None here. A row that does not make a valid `Observation` is returned as a failure
(quarantined by the stage), never dropped.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from schemas.errors import InputError, RemoteError
from schemas.records import Observation
from tasks.mast.http import MastClient, with_retries

log = logging.getLogger(__name__)

# The paper's selection (paper-method.md section 1), as CAOM criteria.
SCIENCE_IMAGES: dict[str, Any] = {
    "obs_collection": "HST",
    "dataproduct_type": "image",
    "intentType": "science",
    "dataRights": "PUBLIC",
}
# Calibrated images only (level 1 is raw). Exactly two values mean the same whether MAST types
# calib_level as discrete or as a [min, max] range (mast-access.md pitfall 5).
DEFAULT_CALIB_LEVELS = (2, 3)
PAGE_SIZE = 5000
IDS_PER_QUERY = 50
MAX_SHORTFALL_SPLITS = 8
INT_NULL = -999


@dataclass(frozen=True)
class Window:
    """A closed interval of t_obs_release, MJD."""

    start: float
    end: float

    @property
    def days(self) -> float:
        return self.end - self.start

    def halves(self) -> tuple[Window, Window]:
        middle = (self.start + self.end) / 2
        return Window(self.start, middle), Window(middle, self.end)

    def __str__(self) -> str:
        return f"[{self.start:.5f}, {self.end:.5f}]"


@dataclass(frozen=True)
class QuerySpec:
    """One CAOM query: the science-image criteria, a release window, optionally proposal ids."""

    window: Window
    proposal_ids: tuple[str, ...] = ()
    calib_levels: tuple[int, ...] = DEFAULT_CALIB_LEVELS

    def criteria(self) -> dict[str, Any]:
        criteria = dict(SCIENCE_IMAGES)
        if self.calib_levels:
            criteria["calib_level"] = list(self.calib_levels)
        criteria["t_obs_release"] = [self.window.start, self.window.end]
        if self.proposal_ids:
            # CAOM stores ids as text; some clients pad them ('07885'). Ask for both forms.
            ids = {p for pid in self.proposal_ids for p in (pid, pid.zfill(5))}
            criteria["proposal_id"] = sorted(ids)
        return criteria

    def with_window(self, window: Window) -> QuerySpec:
        return QuerySpec(window, self.proposal_ids, self.calib_levels)


@dataclass
class RowFailure:
    record_id: str
    reason: str
    detail: str


def specs_for(window: Window, proposal_ids: Sequence[str],
              calib_levels: Sequence[int] = DEFAULT_CALIB_LEVELS) -> list[QuerySpec]:
    ids, levels = list(proposal_ids), tuple(calib_levels)
    if not ids:
        return [QuerySpec(window, (), levels)]
    return [QuerySpec(window, tuple(ids[i:i + IDS_PER_QUERY]), levels) for i in range(0, len(ids), IDS_PER_QUERY)]


def count(client: MastClient, spec: QuerySpec, attempts: int) -> int:
    def once() -> int:
        return int(client.observations().query_criteria_count(**spec.criteria()))

    return with_retries(once, what=f"count {spec.window}", attempts=attempts, base_s=client.backoff_s)


def plan(client: MastClient, spec: QuerySpec, *, max_rows: int, min_days: float,
         attempts: int) -> list[tuple[QuerySpec, int]]:
    """Split `spec`'s window until each piece counts <= max_rows; returns (spec, count) pieces."""
    n = count(client, spec, attempts)
    if n <= max_rows:
        return [(spec, n)] if n > 0 else []
    if spec.window.days / 2 < min_days:
        raise RemoteError(
            f"window {spec.window} holds {n} rows (> {max_rows}) and cannot be split below {min_days} days; "
            "raise max_rows_per_query"
        )
    out: list[tuple[QuerySpec, int]] = []
    for half in spec.window.halves():
        out += plan(client, spec.with_window(half), max_rows=max_rows, min_days=min_days, attempts=attempts)
    return out


def fetch(client: MastClient, spec: QuerySpec, expected: int, *, min_days: float, attempts: int,
          depth: int = 0) -> list[dict[str, Any]]:
    """Rows of `spec`, at least `expected` of them; a short answer is re-asked in smaller windows.

    Splitting is bounded: at most MAX_SHORTFALL_SPLITS levels, and only while the halves' counts
    add up to the whole (a server whose counts disagree with its rows is not asked forever).
    """

    def once() -> list[dict[str, Any]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NoResultsWarning: an empty window is an answer
            table = client.observations().query_criteria(pagesize=PAGE_SIZE, **spec.criteria())
        return table_rows(table)

    rows = with_retries(once, what=f"query {spec.window}", attempts=attempts, base_s=client.backoff_s)
    received = distinct_rows(rows)
    if received >= expected:
        return rows
    short = f"MAST returned {received} of {expected} rows for window {spec.window}"
    if spec.window.days / 2 < min_days or depth >= MAX_SHORTFALL_SPLITS:
        raise RemoteError(f"{short} and the window cannot be split further")
    log.warning("%s; splitting the window", short)
    halves = [spec.with_window(half) for half in spec.window.halves()]
    counts = [count(client, sub, attempts) for sub in halves]
    # Closed windows share their boundary, so the halves may count a few rows twice, never many.
    if sum(counts) > expected + max(10, expected // 10):
        raise RemoteError(f"{short}, and its counts do not add up (halves count {counts}): refusing a partial answer")
    out: list[dict[str, Any]] = []
    for sub, n in zip(halves, counts, strict=True):
        if n:
            out += fetch(client, sub, n, min_days=min_days, attempts=attempts, depth=depth + 1)
    return out


def distinct_rows(rows: Sequence[dict[str, Any]]) -> int:
    """Rows counted once per obsid: pages that overlap repeat rows, which must not hide missing ones."""
    return len({_text(row, "obsid", "obsID") or f"row {i}" for i, row in enumerate(rows)})


# -- rows ----------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """A masked-table cell as a Python value: masked/""/-999/NaN -> None."""
    import numpy as np

    if value is None or value is np.ma.masked or np.ma.is_masked(value):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value == INT_NULL:
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def table_rows(table: Any) -> list[dict[str, Any]]:
    if table is None or len(table) == 0:
        return []
    names = list(table.colnames)
    return [{name: _plain(row[name]) for name in names} for row in table]


def _text(row: dict[str, Any], *names: str) -> str:
    for name in names:
        value = row.get(name)
        if value is not None:
            return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return ""


def _number(row: dict[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def to_observation(row: dict[str, Any]) -> Observation:
    return Observation(
        obsid=_text(row, "obsid", "obsID"),
        obs_id=_text(row, "obs_id"),
        proposal_id=_text(row, "proposal_id"),
        obs_collection=_text(row, "obs_collection") or "HST",
        instrument_name=_text(row, "instrument_name"),
        filters=_text(row, "filters"),
        target_name=_text(row, "target_name"),
        s_ra=_number(row, "s_ra"),
        s_dec=_number(row, "s_dec"),
        t_min=_number(row, "t_min"),
        t_obs_release=_number(row, "t_obs_release"),
        jpeg_url=_text(row, "jpegURL", "jpegurl"),
        obs_title=_text(row, "obs_title"),
    )


def to_observations(rows: Iterable[dict[str, Any]]) -> tuple[list[Observation], list[RowFailure]]:
    """Validated, de-duplicated (on obsid, last wins) observations, and the rows refused."""
    good: dict[str, Observation] = {}
    failures: list[RowFailure] = []
    for row in rows:
        ident = _text(row, "obsid", "obsID") or _text(row, "obs_id") or "unknown"
        collection = _text(row, "obs_collection")
        if collection and collection != "HST":
            failures.append(RowFailure(f"observation/{ident}", "outside_selection",
                                       f"obs_collection {collection!r} is not HST"))
            continue
        try:
            obs = to_observation(row)
        except (ValidationError, InputError, ValueError) as err:
            detail = err.errors()[0]["msg"] if isinstance(err, ValidationError) else str(err)
            failures.append(RowFailure(f"observation/{ident}", "invalid_observation", detail))
            continue
        good[obs.obsid] = obs
    return [good[k] for k in sorted(good, key=int)], failures
