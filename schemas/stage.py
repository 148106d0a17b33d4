"""What every stage returns: small, JSON-serialisable, safe to pass between flows and machines."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class StageResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    digest: str = Field(description="digest of the stage's output manifest: the next stage's cache key")
    cached: bool = Field(default=False, description="True when the inputs were unchanged and nothing ran")
    outputs: dict[str, str] = Field(default_factory=dict, description="name -> path or URL of what was written")
    stats: dict[str, Any] = Field(default_factory=dict)
