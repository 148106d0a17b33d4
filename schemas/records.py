"""Records exchanged between stages: one row of a stage's Parquet table each."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_PROPOSAL_ID = re.compile(r"^\d{1,6}$")


def normalize_proposal_id(value: object) -> str:
    """MAST stores proposal ids as strings, sometimes zero-padded ('07885'): keep the integer form."""
    text = str(value).strip()
    if not _PROPOSAL_ID.match(text):
        raise ValueError(f"proposal id must be 1-6 digits, got {value!r}")
    return str(int(text))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Observation(_Record):
    """One public HST science image observation (a CAOM row)."""

    obsid: str = Field(description="CAOM product group id (bigint as text); the key for products")
    obs_id: str = Field(description="Human-readable observation name, e.g. j8pu0y010")
    proposal_id: str
    obs_collection: str = "HST"
    instrument_name: str = ""
    filters: str = ""
    target_name: str = ""
    s_ra: float | None = None
    s_dec: float | None = None
    t_min: float | None = Field(default=None, description="Start time, MJD")
    t_obs_release: float | None = Field(default=None, description="Public release time, MJD")
    jpeg_url: str = Field(default="", description="mast: URI or http(s) URL of the preview; '' if none")
    obs_title: str = ""

    @field_validator("obsid")
    @classmethod
    def _obsid_digits(cls, v: str) -> str:
        if not v or not v.isdigit():
            raise ValueError(f"obsid must be a non-empty string of digits, got {v!r}")
        return v

    @field_validator("obs_id")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v:
            raise ValueError("obs_id must not be empty")
        return v

    @field_validator("proposal_id", mode="before")
    @classmethod
    def _proposal(cls, v: object) -> str:
        return normalize_proposal_id(v)

    @field_validator("s_ra")
    @classmethod
    def _ra(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or not 0.0 <= v <= 360.0):
            raise ValueError(f"s_ra must be a finite angle in [0, 360] degrees, got {v!r}")
        return v

    @field_validator("s_dec")
    @classmethod
    def _dec(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or not -90.0 <= v <= 90.0):
            raise ValueError(f"s_dec must be a finite angle in [-90, 90] degrees, got {v!r}")
        return v

    @field_validator("t_min", "t_obs_release")
    @classmethod
    def _mjd(cls, v: float | None) -> float | None:
        if v is not None and (not math.isfinite(v) or v < 0):
            raise ValueError(f"MJD must be finite and non-negative, got {v!r}")
        return v


ProposalSource = Literal["catalog", "apt", "pro"]


class Proposal(_Record):
    """An HST observing proposal, with the text the captions come from."""

    proposal_id: str
    cycle: int = Field(ge=0, le=100, description="HST cycle, read from the proposal document")
    category: str = ""
    title: str = ""
    pi: str = ""
    abstract: str = ""
    proposal_type: str = ""
    source: ProposalSource

    @field_validator("proposal_id", mode="before")
    @classmethod
    def _proposal(cls, v: object) -> str:
        return normalize_proposal_id(v)

    @property
    def abstract_sha256(self) -> str:
        return sha256_text(self.abstract)


class PreviewImage(_Record):
    """The outcome for one observation's preview: stored, or why not (failure is a value)."""

    obsid: str
    proposal_id: str
    status: Literal["ok", "http_error", "decode_error", "too_small", "too_large", "no_preview", "policy_skip"]
    sha256: str = Field(default="", description="sha256 of the stored 512x512 JPEG; the image store key")
    original_sha256: str = ""
    source_url: str = ""
    width: int = Field(default=0, ge=0, description="original width in pixels")
    height: int = Field(default=0, ge=0)
    error: str = ""
    http_status: int = Field(default=0, ge=0, description="HTTP status of a failed download; 0 otherwise")

    @field_validator("proposal_id", mode="before")
    @classmethod
    def _proposal(cls, v: object) -> str:
        return normalize_proposal_id(v)


class QuarantineRecord(_Record):
    """A record a stage refused, kept with its reason so nothing is silently dropped."""

    record_id: str = Field(min_length=1)
    stage: str = Field(min_length=1)
    reason: str = Field(min_length=1, description="short machine-friendly reason, e.g. 'decode_error'")
    detail: str = ""
    created_at: datetime = Field(default_factory=utcnow)
