"""The ingest watermark: the latest `t_obs_release` a complete window run has ingested.

It lives in the data root (`state/ingest-watermark.json`) and is written last, after every
table has committed, so a killed run leaves the previous watermark and its rerun re-reads the
same window. A refresh starts `overlap_days` before it: MAST re-processes observations and
publishes rows late, and rows are de-duplicated on obsid anyway.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import InputError, validation_reasons
from storage.fs import atomic_write_text, exists, join, read_text
from storage.layout import DataLayout

WATERMARK_FILE = "ingest-watermark.json"
MJD_UNIX_EPOCH = 40587.0


def now_mjd() -> float:
    return MJD_UNIX_EPOCH + time.time() / 86400.0


class Watermark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    t_obs_release: float = Field(ge=0, description="latest release time ingested (MJD)")
    window_until: float = Field(ge=0, description="upper bound of the window that set it (MJD)")
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


def watermark_path(layout: DataLayout) -> str:
    return join(layout.state, WATERMARK_FILE)


def read_watermark(layout: DataLayout) -> Watermark | None:
    path = watermark_path(layout)
    if not exists(path):
        return None
    try:
        return Watermark.model_validate_json(read_text(path))
    except ValueError as err:
        raise InputError(f"watermark {path} is unreadable ({validation_reasons(err)}); delete it (the next full ingest writes it "
                         "again) or run ingest --rebuild") from None


def write_watermark(layout: DataLayout, mark: Watermark) -> None:
    atomic_write_text(watermark_path(layout), json.dumps(mark.model_dump(mode="json"), indent=2, sort_keys=True))


def advance(previous: Watermark | None, seen_max: float | None, window_until: float) -> Watermark | None:
    """The new watermark after a complete window run: never moves backwards."""
    candidates = [v for v in (seen_max, previous.t_obs_release if previous else None) if v is not None]
    if not candidates:
        return previous
    return Watermark(t_obs_release=max(candidates),
                     window_until=max(window_until, previous.window_until if previous else 0.0))
