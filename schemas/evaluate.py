"""Parameters of the evaluate flow (`EvaluateParams`, the Prefect UI form) and of search (`SearchParams`).

Evaluation compares the fine-tuned model with the base model (the same run's step-0 export: the
pretrained weights, or on the synthetic sky the untrained init) and any controls, all on one
held-out split, and builds the search index for the fine-tuned model.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.settings import default_data_root

EvalSplit = Literal["heldout", "test", "val"]
HELDOUT_SPLITS: dict[str, tuple[str, ...]] = {"heldout": ("val", "test"), "test": ("test",), "val": ("val",)}
CaptionChoice = Literal["summary", "abstract"]
DeviceChoice = Literal["auto", "cpu", "cuda"]

_MODEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
RESERVED_MODEL_NAMES = ("finetuned", "base")


class EvaluateParams(BaseModel):
    """Evaluate a training run (fine-tuned vs base vs controls) and index it for search."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root: a local path or fsspec URL")
    run: str | None = Field(
        default=None, description="run under runs/ (name, path or manifest digest); default: the newest "
                                  "finished run that is not a shuffled control")
    dataset_version: str | None = Field(
        default=None, description="dataset version to evaluate on; default: the one the run was trained on")
    shuffled_run: str | None = Field(
        default=None, description="the shuffled-pairs control run; default: found among finished runs "
                                  "on the same dataset version")
    variants: dict[str, str] = Field(
        default_factory=dict, description="more models to report, name -> run (e.g. {'abstract': 'run-x'})")
    auto_variants: bool = Field(
        default=True, description="also report other finished runs on the same dataset version "
                                  "(a shuffled control as 'shuffled')")
    split: EvalSplit = Field(
        default="heldout", description="examples every model is measured on: 'heldout' = val + test (never "
                                       "trained on, like the paper's validation set), or one of them")
    caption_source: CaptionChoice | None = Field(
        default=None, description="captions to retrieve; default: what the run trained on")
    ground_truth: str | None = Field(
        default=None, description="synthetic sky ground_truth.json, for zero-shot accuracy (never read otherwise)")
    max_items: int | None = Field(default=None, ge=2, description="cap on held-out examples (stored order)")
    gallery_k: int = Field(default=8, ge=1, le=50, description="images per query in the galleries")
    zeroshot_template: str = Field(default="{}", description="prompt around each class name, e.g. 'an image of {}'")
    build_index: bool = Field(default=True, description="also build the search index for the fine-tuned model")
    batch_size: int = Field(default=64, ge=1, le=4096)
    device: DeviceChoice = "auto"
    seed: int = Field(default=0, ge=0, description="batching of the in-batch-of-100 metric, shuffled pairs")
    refresh: bool = Field(default=False, description="evaluate again even when an identical report exists")

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _MODEL_NAME.match(name) or name in RESERVED_MODEL_NAMES:
                raise ValueError(f"variant name {name!r} must be lowercase letters, digits, '-' or '_' and "
                                 f"not one of {RESERVED_MODEL_NAMES}")
        return v

    @field_validator("zeroshot_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if v.count("{}") != 1:
            raise ValueError("zeroshot_template must contain '{}' exactly once (where the class name goes)")
        return v

    def cache_config(self) -> dict:
        """What changes the report (not where it is written or whether to recompute)."""
        return self.model_dump(mode="json", exclude={"data", "refresh", "device", "batch_size"})


class SearchParams(BaseModel):
    """A plain-language query against the search index."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root: a local path or fsspec URL")
    query: str = Field(min_length=1, max_length=300, description="what to look for, e.g. 'globular cluster'")
    k: int = Field(default=10, ge=1, le=100, description="how many images to return")
    index: str | None = Field(default=None, description="index name under index/; default: index/latest")
    device: DeviceChoice = "auto"

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty query")
        return v
