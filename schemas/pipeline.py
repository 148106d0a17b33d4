"""Parameters of the orchestration flows: pipeline, refresh, rebuild, status, demo.

`PipelineParams` composes the stage params models, so the Prefect UI shows one form with a
section per stage. The pipeline sets every stage's `data` to its own resolved data root (a
stage's `data` field inside this form is ignored), and pins training and evaluation to the
dataset version the build stage produced, so cache keys name exact inputs, never 'latest'.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.dataset import BuildDatasetParams
from schemas.evaluate import EvaluateParams
from schemas.ingest import IngestParams
from schemas.settings import default_data_root
from schemas.stage import StageResult
from schemas.summary import SummarizeParams
from schemas.train import TrainParams

StageName = Literal["ingest", "summarize", "dataset", "train", "evaluate"]
STAGE_ORDER: tuple[str, ...] = ("ingest", "summarize", "dataset", "train", "evaluate")
TaskRunnerName = Literal["threads", "dask"]


class PipelineParams(BaseModel):
    """ingest -> summarize -> build_dataset -> train (fine-tuned + shuffled control) -> evaluate."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root (or the parent of versioned roots after a rebuild)")
    ingest: IngestParams = Field(default_factory=IngestParams, description="archive selection and previews")
    summarize: SummarizeParams = Field(default_factory=SummarizeParams, description="summarizer backend")
    dataset: BuildDatasetParams = Field(default_factory=BuildDatasetParams, description="splits and shards")
    train: TrainParams = Field(default_factory=TrainParams, description="fine-tuning (the control copies it)")
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams, description="retrieval and zero-shot report")

    shuffled_control: bool = Field(default=True, description="also train the shuffled-pairs control (must stay at chance)")
    until: StageName = Field(default="evaluate", description="stop after this stage")
    refresh_cache: bool = Field(
        default=False, description="ignore Prefect's cache records (each stage's own content cache still applies)")
    ingest_cache_hours: float = Field(
        default=12.0, ge=0, description="reuse an archive query this long; 0 asks the archive every run")
    train_deployment: str = Field(
        default="", description="run training as this deployment, e.g. 'train-stage/gpu' (GPU pool); "
        "'' uses $HUBBLECLIP_TRAIN_DEPLOYMENT, else trains in-process")
    train_timeout_s: float | None = Field(default=None, gt=0, description="give up waiting for a remote training run")
    task_runner: TaskRunnerName = Field(
        default="threads", description="'dask': ingest, summarize and build run their tasks on a Dask cluster")
    dask_address: str = Field(default="", description="Dask scheduler address; '' starts a local cluster")
    dask_workers: int = Field(default=2, ge=1, le=512, description="workers of the local Dask cluster")

    @field_validator("train_deployment")
    @classmethod
    def _deployment_name(cls, v: str) -> str:
        v = v.strip()
        if v and v.count("/") != 1:
            raise ValueError(f"train_deployment must be '<flow>/<deployment>', got {v!r}")
        return v

    def runs_stage(self, stage: str) -> bool:
        return STAGE_ORDER.index(stage) <= STAGE_ORDER.index(self.until)


class RefreshParams(PipelineParams):
    """For schedules: ingest from the watermark (new releases and cycles), then rerun what changed."""


class RebuildParams(PipelineParams):
    """From scratch into a new data version; `current` moves only when the new version is complete."""

    version: str = Field(default="", description="id of the new version; '' = a UTC timestamp")
    keep_versions: int | None = Field(
        default=None, ge=1, description="after the switch, delete complete versions beyond this many; unset keeps all")

    @field_validator("version")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if v and ("/" in v or v.startswith(".")):
            raise ValueError(f"version must be a plain directory name, got {v!r}")
        return v


class StatusParams(BaseModel):
    """What a data root holds: its versions and each stage's current manifest digest."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root or versioned parent")


class DemoParams(BaseModel):
    """The end-to-end demo on a synthetic sky served by the local archive."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default="./demo-data", description="where the sky, the data and the report go")
    quick: bool = Field(default=False, description="a much smaller sky and shorter training (<= 2 minutes)")
    proposals: int | None = Field(default=None, ge=2, le=5000, description="proposals in the sky (default 120; quick 16)")
    max_images_per_proposal: int | None = Field(default=None, ge=1, le=100, description="previews per proposal")
    train_steps: int | None = Field(default=None, ge=1, description="training steps (default from the size)")
    seed: int = Field(default=0, ge=0, description="seed of the synthetic sky")
    summarizer: Literal["extractive", "transformers", "vllm", "openai"] = Field(
        default="extractive", description="summarizer backend (extractive needs no model)")


class PipelineResult(BaseModel):
    """What the pipeline returns: every stage's result, which were cache hits, and the report."""

    model_config = ConfigDict(extra="forbid")

    data: str
    root: str = Field(description="the data root the stages used")
    version: str = Field(default="", description="data version id ('' for a flat data root)")
    stages: dict[str, StageResult] = Field(default_factory=dict)
    cache_hits: list[str] = Field(default_factory=list, description="stages served from a cache")
    report: str = Field(default="", description="path of report.json ('' when evaluation did not run)")
    elapsed_s: float = 0.0
    stats: dict[str, Any] = Field(default_factory=dict)
