"""Parameters of the ingest stage: one model, so the Prefect UI shows it as a form.

What is selected (a release window, cycles from the proposal store, or proposal ids), how many
previews per proposal, which previews count (the preview policy), and the knobs that keep the
queries far below MAST's row limit. Server URLs and politeness settings live in
`schemas.settings.Settings`; the optional `*_url` fields here override them for one run.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.records import normalize_proposal_id
from schemas.settings import check_server_url, default_data_root

_HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class PreviewPolicy(BaseModel):
    """Which preview JPEGs count, judged on the preview's file name (case-insensitive).

    The default is the paper's (paper-method.md section 1): combined "total" detection previews
    only, no colour composites. `include=[]` accepts every preview; `exclude` always wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    include: list[str] = Field(
        default_factory=lambda: ["total"],
        description="a preview counts only if its file name contains one of these (empty: any name)",
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["color"],
        description="a preview never counts if its file name contains one of these",
    )

    def accepts(self, filename: str) -> bool:
        name = filename.lower()
        if any(word.lower() in name for word in self.exclude):
            return False
        return not self.include or any(word.lower() in name for word in self.include)

    def describe(self) -> str:
        inc = " or ".join(self.include) or "anything"
        exc = ", ".join(self.exclude) or "nothing"
        return f"file name contains {inc}; excludes {exc}"


def _listed(value: object, what: str) -> list:
    """A comma-separated string or a list; one given but naming nothing is an error, since an
    empty selection means the whole archive."""
    if isinstance(value, str):
        items = [p.strip() for p in value.split(",") if p.strip()]
        if value.strip() and not items:
            raise ValueError(f"{value!r} names no {what}")
        return items
    return list(value or [])


class IngestParams(BaseModel):
    """One ingest run. Exactly one selection applies: window (default), cycles, or proposal ids."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root: a local path or any fsspec URL")
    mast_url: str | None = Field(default=None, description="MAST server; default from settings")
    stsci_url: str | None = Field(default=None, description="STScI document server; default from settings")
    catalog_url: str | None = Field(
        default=None, description="STScI proposal abstracts catalog flat file (preferred text source)"
    )

    # -- selection ---------------------------------------------------------------------------
    since_mjd: float | None = Field(default=None, ge=0, description="t_obs_release lower bound (MJD)")
    until_mjd: float | None = Field(default=None, ge=0, description="t_obs_release upper bound (MJD); default now")
    cycles: list[int] = Field(default_factory=list, description="HST cycles, looked up in the proposal store")
    proposal_ids: list[str] = Field(default_factory=list, description="HST proposal ids, e.g. 5371")
    calib_levels: list[int] = Field(
        default_factory=lambda: [2, 3], description="CAOM calibration levels (1 raw, 2 calibrated, 3 combined)"
    )
    refresh: bool = Field(default=False, description="start the window at the stored watermark (minus overlap)")
    rebuild: bool = Field(default=False, description="ignore the watermark and stored rows; write new versions")
    retry_failed: bool = Field(default=False, description="re-attempt exactly the previews and proposals that failed")

    # -- previews ----------------------------------------------------------------------------
    max_images_per_proposal: int = Field(default=20, ge=0, le=10_000)
    seed: int = Field(default=0, description="seed of the per-proposal preview sample")
    preview_policy: PreviewPolicy = Field(default_factory=PreviewPolicy)
    image_size: int = Field(default=512, ge=16, le=4096, description="side of the stored square image")
    padding_color: str = Field(default="#ffffff", description="colour around the resized preview (#rrggbb)")
    download_via: Literal["direct", "astroquery"] = Field(
        default="direct",
        description="mast: previews by one GET on astroquery's Download endpoint and session (direct), or by "
        "Observations.download_file (HEAD + GET; its ERROR status is checked)",
    )
    min_image_side: int = Field(default=16, ge=1, description="smaller originals are refused (too_small)")
    max_image_pixels: int = Field(
        default=50_000_000, ge=1, description="larger originals are refused unread (decompression bombs)"
    )

    # -- limits and batching -----------------------------------------------------------------
    max_rows_per_query: int = Field(
        default=50_000, ge=1, description="split release windows until each query counts at most this"
    )
    min_window_days: float = Field(default=1e-3, gt=0, description="a window is never split below this")
    overlap_days: float = Field(default=7.0, ge=0, description="refresh re-reads this much before the watermark")
    max_proposals: int | None = Field(default=None, ge=1, description="keep only the first N proposal ids")
    preview_batch_size: int = Field(default=32, ge=1, le=500, description="previews per download task")
    proposal_batch_size: int = Field(default=20, ge=1, description="proposals per fetch task")
    product_batch_size: int = Field(default=500, ge=1, le=500, description="obsids per get_product_list call")
    commit_every: int = Field(default=8, ge=1, description="preview batches between table commits")
    retry_backoff_s: float = Field(
        default=0.5, ge=0, le=60, description="base of the exponential backoff (with jitter) between HTTP retries"
    )

    @field_validator("mast_url", "stsci_url")
    @classmethod
    def _server_url(cls, v: str | None) -> str | None:
        return None if v is None else check_server_url(v)

    @field_validator("proposal_ids", mode="before")
    @classmethod
    def _ids(cls, v: object) -> list[str]:
        return sorted({normalize_proposal_id(p) for p in _listed(v, "proposal id")}, key=int)

    @field_validator("cycles", mode="before")
    @classmethod
    def _cycles(cls, v: object) -> list[int]:
        return sorted({int(c) for c in _listed(v, "cycle")})

    @field_validator("padding_color")
    @classmethod
    def _colour(cls, v: str) -> str:
        if not _HEX_COLOUR.match(v):
            raise ValueError(f"padding_color must be #rrggbb, got {v!r}")
        return v.lower()

    @model_validator(mode="after")
    def _one_selection(self) -> IngestParams:
        if self.cycles and self.proposal_ids:
            raise ValueError("give cycles or proposal_ids, not both")
        if self.refresh and (self.since_mjd is not None or self.rebuild):
            raise ValueError("refresh takes its window from the watermark: no since_mjd, no rebuild")
        if self.since_mjd is not None and self.until_mjd is not None and self.until_mjd <= self.since_mjd:
            raise ValueError(f"until_mjd {self.until_mjd} must be after since_mjd {self.since_mjd}")
        return self

    @property
    def padding_rgb(self) -> tuple[int, int, int]:
        h = self.padding_color
        return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)

    @property
    def selection(self) -> Literal["window", "cycles", "proposals"]:
        if self.cycles:
            return "cycles"
        if self.proposal_ids:
            return "proposals"
        return "window"

    def preview_config(self) -> dict[str, object]:
        """What decides a preview's stored bytes: part of the previews table's config."""
        return {
            "policy": self.preview_policy.model_dump(),
            "image_size": self.image_size,
            "padding_color": self.padding_color,
            "min_image_side": self.min_image_side,
            "max_image_pixels": self.max_image_pixels,
            "max_images_per_proposal": self.max_images_per_proposal,
            "seed": self.seed,
        }
