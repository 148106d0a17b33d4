"""Prefect flow `summarize`: proposals table -> summaries table (tasks.summarize).

The flow plans in its own process (tasks.summarize.stage.plan_summarize): the stage cache (the
summaries manifest already records these proposals and this config: nothing to do) and the
per-abstract cache lookup. Only the abstracts without a cached summary are split into batches
(CHUNK_ABSTRACTS each; VLLM_BATCH_PROMPTS for vLLM, whose scheduler wants many at once; a bounded
number of them), and the task `summarize-batch` is mapped over them. On the default thread runner the batches run in
this process; when the pipeline runs the stage on Dask (flows.stages swaps the task runner), they
run on the Dask workers, each of which loads its backend once and keeps it for the batches it gets.

A batch returns JSON-safe rows and failures only, never live objects. The flow appends each
finished batch's summaries to `summary_cache` (a killed run keeps them) and writes `summaries` once,
in proposal order, so the table and its digest are the same whatever ran the batches. A failed
batch fails the run after the others are cached. Infrastructure failures (a vLLM server down) are
retried per batch; user errors and unconstrained output are not.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.caching import is_retryable
from flows.runners import ProgressLog, default_task_runner, map_in_order
from flows.secrets import prepare_secrets
from schemas.stage import StageResult
from schemas.summary import SummarizeParams
from tasks.summarize.stage import (
    cache_summaries,
    finish_summarize,
    plan_summarize,
    release_backends,
    summarize_batch,
    summary_batches,
)


@task(name="summarize-batch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_jitter_factor=0.3, retry_condition_fn=is_retryable)
def summarize_batch_task(params: SummarizeParams, config: dict[str, Any], items: list[dict[str, str]]) -> dict:
    """One batch of abstracts on this worker's (cached) backend: JSON-safe rows and failures."""
    prepare_secrets()  # a Dask worker has its own environment: the vLLM API key from a Secret block
    return summarize_batch(params, config, items)


@flow(name="summarize", task_runner=default_task_runner(), log_prints=False)
def summarize(params: SummarizeParams | None = None) -> StageResult:
    """Summarize proposal abstracts into '<objects>; <use cases>' captions with the chosen backend."""
    params = params or SummarizeParams()
    prepare_secrets()  # the vLLM API key (and S3 keys) from Secret blocks, when the environment has none
    logger = get_run_logger()
    try:
        result = _summarize(params, logger)
    finally:
        release_backends()  # what this process loaded (thread runner, or planning's openai client)
    _report(params, result)
    logger.info("summaries %s: %s rows, %s new, %s failed", result.digest[:12], result.stats.get("summaries"),
                result.stats.get("generated"), result.stats.get("failed"))
    return result


def _summarize(params: SummarizeParams, logger: Any) -> StageResult:
    plan = plan_summarize(params)
    if plan.cached is not None:
        return plan.cached
    batches = summary_batches(plan)
    logger.info("%d abstracts to summarize in %d batches (%d cached)", len(plan.pending), len(batches), plan.reused)
    started = time.perf_counter()
    progress = ProgressLog(logger, len(plan.pending), "summarized %d of %d abstracts (%d%%)")

    def keep(batch: dict) -> None:
        cache_summaries(params.data, batch)  # in the flow's thread: appends are serialised
        progress.add(len(batch["rows"]) + len(batch["failures"]))

    results = map_in_order(summarize_batch_task, batches, params, plan.config, on_result=keep)
    return finish_summarize(plan, results, generate_seconds=time.perf_counter() - started if batches else None)


def _report(params: SummarizeParams, result: StageResult) -> None:
    stats = result.stats
    rows = [
        ("proposals", stats.get("proposals", 0)), ("summaries", stats.get("summaries", 0)),
        ("reused from cache", stats.get("reused", 0)), ("generated", stats.get("generated", 0)),
        ("failed (quarantined)", stats.get("failed", 0)), ("batches", stats.get("batches", 0)),
        ("abstracts/s", stats.get("abstracts_per_s", 0.0)), ("tokens/s", stats.get("tokens_per_s", 0.0)),
        ("output tokens/s", stats.get("output_tokens_per_s", 0.0)),
        ("invalid JSON rate", stats.get("invalid_json_rate", 0.0)), ("cut-off rate", stats.get("cut_off_rate", 0.0)),
        ("grammar violation rate", stats.get("grammar_violation_rate", 0.0)),
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
