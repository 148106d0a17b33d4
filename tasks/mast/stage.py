"""`run_ingest(params, settings) -> StageResult`: the ingest stage as one plain function.

Concurrency is a thread pool over batches (window queries, proposal batches, preview batches),
each batch sequential on its thread's own astroquery client; commits happen on the calling
thread only. The Prefect flow (flows/ingest.py) runs the same steps as mapped tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

from schemas.ingest import IngestParams
from schemas.records import PreviewImage
from schemas.settings import Settings, get_settings
from schemas.stage import StageResult
from tasks.mast import steps
from tasks.mast.http import with_retries
from tasks.mast.previews import batches

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[str, int, int], None]  # (phase, done, total)
BATCH_ATTEMPTS = 3


def _pool_map(ctx: steps.IngestContext, fn: Callable[[T], R], items: Sequence[T], phase: str,
              progress: Progress | None, on_result: Callable[[R], None] | None = None) -> list[R]:
    """Run `fn` over `items` on the thread pool; each item retried (bounded) on RemoteError."""
    results: list[R] = []
    if not items:
        return results
    workers = min(ctx.settings.download_concurrency, len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ingest-{phase}") as pool:
        futures = [pool.submit(with_retries, (lambda item=item: fn(item)), what=f"{phase} batch",
                               attempts=BATCH_ATTEMPTS, base_s=ctx.params.retry_backoff_s) for item in items]
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
            if progress is not None:
                progress(phase, done, len(items))
    return results


def run_ingest(params: IngestParams, settings: Settings | None = None, *,
               progress: Progress | None = None) -> StageResult:
    """Ingest observations, proposals and previews; resumable, incremental, idempotent."""
    started = time.monotonic()
    ctx = steps.IngestContext(params, settings or get_settings())
    before = {name: (m.digest if (m := ctx.tables.manifest(name)) else "") for name in steps.TABLES}
    steps.check_image_settings(ctx)
    steps.recover(ctx)
    selection = steps.resolve_selection(ctx)

    # 1. observations: count, split, query concurrently, commit once
    pieces = steps.plan_queries(ctx, selection)
    row_lists = _pool_map(ctx, lambda piece: steps.query_window(ctx, *piece), pieces, "query", progress)
    outcome = steps.commit_observations(ctx, selection, row_lists)

    # 2. proposals not yet stored (documents cached as they arrive), commit once
    targets = steps.proposal_targets(ctx, outcome.scope)
    fetched = _pool_map(ctx, lambda ids: steps.fetch_proposals(ctx, ids),
                        batches(targets, params.proposal_batch_size), "proposals", progress)
    steps.commit_proposals(ctx, [p for good, _ in fetched for p in good], [f for _, bad in fetched for f in bad])

    # 3. previews: plan, download in batches, commit every few batches
    jobs, decided = steps.plan_preview_jobs(ctx, outcome.scope)
    steps.commit_previews(ctx, decided)
    pending: list[PreviewImage] = []
    completed = 0

    def collect(rows: list[PreviewImage]) -> None:
        nonlocal completed
        pending.extend(rows)
        completed += 1
        if completed % params.commit_every == 0:
            steps.commit_previews(ctx, pending)
            pending.clear()

    _pool_map(ctx, lambda job_batch: steps.download_previews(ctx, job_batch),
              batches(jobs, params.preview_batch_size), "previews", progress, on_result=collect)
    steps.commit_previews(ctx, pending)

    # 4. watermark last
    digests = steps.finish(ctx, selection, outcome)
    return stage_result(ctx, digests, before, started, planned=len(jobs), targets=len(targets), windows=len(pieces))


def stage_result(ctx: steps.IngestContext, digests: dict[str, str], before: dict[str, str], started: float,
            **counts: Any) -> StageResult:
    stats: dict[str, Any] = dict(sorted(ctx.stats.items()))
    stats.update(counts)
    stats["seconds"] = round(time.monotonic() - started, 3)
    stats["table_digests"] = digests
    log.info("ingest: %s", {k: v for k, v in stats.items() if k != "table_digests"})
    return StageResult(
        stage=steps.STAGE,
        digest=steps.table_digest(digests),
        cached=digests == before,
        outputs={name: ctx.tables.table_dir(name) for name in steps.TABLES} | {"images": ctx.layout.images},
        stats=stats,
    )
