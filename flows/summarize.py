"""Prefect flow `summarize`: proposals table -> summaries table (tasks.summarize).

The task's cache key is the proposals manifest digest + the current summaries digest + the params
+ the stage's code version (prompt templates and vocabulary included: flows.caching), so a rerun
on unchanged input is a cache hit; when Prefect's record is gone, run_summarize still skips by
itself (its manifest records the inputs and config) and reuses every cached summary.
Infrastructure failures (a vLLM server down) are retried; user errors and unconstrained output
are not.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from flows.caching import is_retryable, stage_task_options
from flows.secrets import prepare_secrets
from schemas.stage import StageResult
from schemas.summary import SummarizeParams
from storage.layout import DataLayout
from storage.tables import TableStore
from tasks.summarize import run_summarize
from tasks.summarize.stage import PROPOSALS_TABLE, SUMMARIES_TABLE

CODE = ("flows.summarize", "tasks.summarize", "schemas.summary", "schemas.vocabulary", "storage",
        "schemas.manifest", "schemas.records", "schemas.arrow")


@task(name="summarize-abstracts", retries=2, retry_delay_seconds=[5, 30], retry_jitter_factor=0.3,
      retry_condition_fn=is_retryable)
def summarize_abstracts_task(params: SummarizeParams, upstream: dict[str, str],
                             code: tuple[str, ...] = CODE) -> StageResult:
    """Run the stage; `upstream` and `code` are here for the cache key."""
    logger = get_run_logger()
    last = [-1]

    def progress(done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent // 10 != last[0] // 10 or done == total:  # a line per 10%, not per abstract
            last[0] = percent
            logger.info("summarized %d of %d abstracts (%d%%)", done, total, percent)

    return run_summarize(params, progress=progress)


def _digest(store: TableStore, name: str) -> str:
    manifest = store.manifest(name)
    return manifest.digest if manifest is not None else ""


@flow(name="summarize", log_prints=False)
def summarize(params: SummarizeParams | None = None) -> StageResult:
    """Summarize proposal abstracts into '<objects>; <use cases>' captions with the chosen backend."""
    params = params or SummarizeParams()
    prepare_secrets()  # the vLLM API key (and S3 keys) from Secret blocks, when the environment has none
    logger = get_run_logger()
    store = TableStore(DataLayout(params.data).tables)
    # The output's digest joins the key: a deleted or replaced summaries table is never a cache hit.
    upstream = {PROPOSALS_TABLE: _digest(store, PROPOSALS_TABLE), SUMMARIES_TABLE: _digest(store, SUMMARIES_TABLE)}
    result = summarize_abstracts_task.with_options(**stage_task_options(params.data, refresh=False))(params, upstream)
    stats = result.stats
    rows = [
        ("proposals", stats.get("proposals", 0)), ("summaries", stats.get("summaries", 0)),
        ("reused from cache", stats.get("reused", 0)), ("generated", stats.get("generated", 0)),
        ("failed (quarantined)", stats.get("failed", 0)),
        ("abstracts/s", stats.get("abstracts_per_s", 0.0)), ("tokens/s", stats.get("tokens_per_s", 0.0)),
        ("output tokens/s", stats.get("output_tokens_per_s", 0.0)),
        ("invalid JSON rate", stats.get("invalid_json_rate", 0.0)), ("cut-off rate", stats.get("cut_off_rate", 0.0)),
        ("caption truncation rate", stats.get("truncation_rate", 0.0)),
        ("caption tokens (max)", stats.get("caption_tokens_max", 0)),
    ]
    create_table_artifact(
        [{"metric": name, "value": value} for name, value in rows],
        key="summarize-stats",
        description=f"summaries {result.digest[:12]} by {stats.get('backend', params.backend)}/"
                    f"{stats.get('model_id', params.model)} ({'cached' if result.cached else 'ran'}); "
                    f"failures: {stats.get('failure_reasons', {})}",
    )
    logger.info("summaries %s: %s rows, %s new, %s failed", result.digest[:12], stats.get("summaries"),
                stats.get("generated"), stats.get("failed"))
    return result
