"""Prefect flow `train`: fine-tune CLIP on a dataset version (tasks.train), in-process on CPU or GPU.

The flow is wiring: one task that runs `run_train` (retried on infrastructure failures; a retry
resumes from the run's last checkpoint rather than starting over), then a metrics artifact.
Caching is the stage's own: an unchanged dataset + config finds the finished run and returns it
(StageResult.cached), with or without Prefect's records. On a GPU work pool the same flow is the
`train-stage` deployment's entrypoint (deploy/prefect.yaml).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from flows.caching import RESULT_SERIALIZER, is_retryable
from schemas.stage import StageResult
from schemas.train import TrainParams
from tasks.train import run_train
from tasks.train.run_log import read_metrics


@task(name="train-clip", retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=is_retryable)
def train_clip(params: TrainParams) -> StageResult:
    logger = get_run_logger()

    def report(step: int, total: int, record: dict[str, Any]) -> None:
        logger.info("step %d/%d loss %.4f lr %.3g %.0f samples/s", step, total, record["loss"], record["lr"],
                    record["samples_per_s"])

    return run_train(params, progress=report)


def metrics_rows(run_dir: str) -> list[dict[str, Any]]:
    """Validation records (and the last training loss before each), for the artifact table."""
    rows, last_train = [], None
    for record in read_metrics(run_dir):
        if record.get("split") == "train":
            last_train = record
        elif record.get("split") == "val":
            rows.append({"step": record["step"],
                         "train_loss": round(last_train["loss"], 4) if last_train else None,
                         "val_loss": round(record["loss"], 4),
                         "val_top10pct_i2t": round(record["top10pct_image_to_text"], 4),
                         "val_top10pct_t2i": round(record["top10pct_text_to_image"], 4),
                         "samples_per_s": round(last_train["samples_per_s"], 1) if last_train else None})
    return rows


@flow(name="train", persist_result=True, result_serializer=RESULT_SERIALIZER)
def train(params: TrainParams | None = None) -> StageResult:
    """Fine-tune CLIP (preset tiny|paper plus overrides); returns the run directory as a StageResult."""
    params = params or TrainParams()
    logger = get_run_logger()
    result = train_clip(params)
    run_dir = result.outputs.get("run_dir", "")
    if run_dir:
        rows = metrics_rows(run_dir)
        create_table_artifact(
            rows or [{"step": result.stats.get("steps"), "note": "no validation split"}],
            key="train-metrics",
            description=f"run {run_dir.rsplit('/', 1)[-1]} ({'cached' if result.cached else 'trained'}): "
                        f"checkpoint {str(result.stats.get('checkpoint_sha256', ''))[:12]}",
        )
    logger.info("train: %s (%s)", run_dir, "cached" if result.cached else "trained")
    return result
