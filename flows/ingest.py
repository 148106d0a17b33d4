"""Prefect flows `ingest` and `ingest-refresh`: thin wiring over tasks.mast.steps.

Tasks own retries (exponential backoff with jitter; `is_retryable` never retries an InputError or
a PermanentRemoteError such as a 404) and cache policies keyed by their real inputs: the query
or the batch, the server URLs, the preview configuration, the data root and the code version.
Concurrency is task mapping over batches (window queries, proposal batches, preview batches) on a
ThreadPoolTaskRunner; each batch runs sequentially on its thread's own astroquery client, so the
number of parallel requests is the pool size. Commits run in the flow's own thread, called
directly (never submitted), so table writes are serialised. A batch that crashes loses nothing
of the others: what came back (failures too) is committed before the error is raised, so the
next run sees it rather than a cached answer.

Timeouts live in the HTTP client (tasks.mast.http): Prefect's task timeouts do not interrupt
synchronous code.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.context import TaskRunContext
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from prefect.utilities.annotations import unmapped
from prefect.utilities.hashing import hash_objects

from flows.caching import canonical_json, code_version, is_retryable, persisted_result_options
from flows.secrets import prepare_secrets
from schemas.ingest import IngestParams
from schemas.records import PreviewImage, Proposal
from schemas.settings import get_settings
from schemas.stage import StageResult
from tasks.mast import steps
from tasks.mast.observations import QuerySpec
from tasks.mast.previews import PreviewJob, batches
from tasks.mast.proposals import ProposalFailure
from tasks.mast.stage import stage_result

CODE = ("flows.ingest", "tasks.mast", "tasks.mast_config", "schemas.ingest", "schemas.records", "storage")
RETRIES = dict(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
               retry_condition_fn=is_retryable)

# One context per flow run and process: clients, stores and the commit lock, shared by its threads.
_CONTEXTS: dict[str, steps.IngestContext] = {}


def context_for(run_key: str, params: IngestParams) -> steps.IngestContext:
    ctx = _CONTEXTS.get(run_key)
    if ctx is None:
        ctx = _CONTEXTS[run_key] = steps.IngestContext(params, get_settings())
    return ctx


def release_context(run_key: str) -> None:
    # A module-level function, not an inline reference to _CONTEXTS in the flow body: a task runner
    # that serialises the flow (Dask) must not have to pickle live contexts with their locks.
    _CONTEXTS.pop(run_key, None)


@dataclass
class IngestKey(CachePolicy):
    """Cache key = the named inputs (canonical JSON) + the server URLs + the ingest code version,
    and for preview downloads the preview configuration (what a stored image is made with): it
    says nothing about proposal documents, whose cache must not miss when it changes."""

    fields: list[str] = field(default_factory=list)
    previews: bool = False

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        params: IngestParams = inputs["params"]
        settings = steps.effective_settings(params, get_settings())
        return hash_objects(
            [canonical_json(_plain(inputs.get(name))) for name in self.fields],
            [settings.mast_url, settings.stsci_url, settings.catalog_url, settings.data],
            canonical_json(params.preview_config()) if self.previews else "",
            code_version(*CODE),
            raise_on_failure=True,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value


def _cached(fields: list[str], params: IngestParams, expiration: timedelta, *, previews: bool = False) -> dict[str, Any]:
    return persisted_result_options(params.data, cache_policy=IngestKey(fields=fields, previews=previews),
                                    cache_expiration=expiration, refresh_cache=params.rebuild or params.retry_failed)


# -- tasks ---------------------------------------------------------------------------------------
@task(name="plan-queries", **RETRIES)
def plan_queries(run_key: str, params: IngestParams, selection: steps.Selection) -> list[tuple[QuerySpec, int]]:
    """Count first and split windows (never cached: the archive changes)."""
    return steps.plan_queries(context_for(run_key, params), selection)


@task(name="query-window", **RETRIES)
def query_window(run_key: str, params: IngestParams, spec: QuerySpec, expected: int) -> list[dict[str, Any]]:
    return steps.query_window(context_for(run_key, params), spec, expected)


@task(name="fetch-proposals", **RETRIES)
def fetch_proposals(run_key: str, params: IngestParams, proposal_ids: list[str]) -> dict[str, list[dict]]:
    good, bad = steps.fetch_proposals(context_for(run_key, params), proposal_ids)
    return {"proposals": [p.model_dump(mode="json") for p in good], "failures": [asdict(f) for f in bad]}


@task(name="download-previews", **RETRIES)
def download_previews(run_key: str, params: IngestParams, jobs: list[PreviewJob], plan_digest: str) -> list[dict]:
    """One batch; `plan_digest` (the previews table when planned) keeps a retry-failed run off the cache."""
    return [r.model_dump(mode="json") for r in steps.download_previews(context_for(run_key, params), jobs)]


@task(name="commit-observations")
def commit_observations(run_key: str, params: IngestParams, selection: steps.Selection,
                        row_lists: Sequence[Sequence[dict]]) -> steps.ObservationsOutcome:
    return steps.commit_observations(context_for(run_key, params), selection, row_lists)


@task(name="commit-proposals")
def commit_proposals(run_key: str, params: IngestParams, fetched: Sequence[dict[str, list[dict]]]) -> int:
    good = [Proposal.model_validate(p) for batch in fetched for p in batch["proposals"]]
    bad = [ProposalFailure(**f) for batch in fetched for f in batch["failures"]]
    return steps.commit_proposals(context_for(run_key, params), good, bad)


@task(name="commit-previews")
def commit_previews(run_key: str, params: IngestParams, rows: Sequence[dict]) -> int:
    return steps.commit_previews(context_for(run_key, params), [PreviewImage.model_validate(r) for r in rows])


def _outcomes(futures: Sequence[Any]) -> tuple[list[Any], BaseException | None]:
    """The results of the futures that finished, and the first error of those that did not."""
    results, crashed = [], None
    for future in futures:
        try:
            results.append(future.result())
        except Exception as err:  # noqa: BLE001 - re-raised by the caller after committing the rest
            crashed = crashed or err
    return results, crashed


# -- flows ---------------------------------------------------------------------------------------
@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=get_settings().download_concurrency),
      log_prints=False)
def ingest(params: IngestParams | None = None) -> StageResult:
    """Ingest HST observations, proposals and previews from MAST and STScI (resumable, incremental)."""
    params = params or IngestParams()
    prepare_secrets()  # the MAST token (and S3 keys) from Secret blocks, when the environment has none
    logger = get_run_logger()
    run_key = uuid.uuid4().hex
    ctx = context_for(run_key, params)
    try:
        return _ingest(run_key, params, ctx, logger)
    finally:
        release_context(run_key)


def _ingest(run_key: str, params: IngestParams, ctx: steps.IngestContext, logger: Any) -> StageResult:
    import time

    started = time.monotonic()
    before = {name: (m.digest if (m := ctx.tables.manifest(name)) else "") for name in steps.TABLES}
    steps.check_image_settings(ctx)
    steps.recover(ctx)
    selection = steps.resolve_selection(ctx)

    pieces = plan_queries(run_key, params, selection)
    row_lists = query_window.map(unmapped(run_key), unmapped(params), [s for s, _ in pieces],
                                 [n for _, n in pieces]).result() if pieces else []
    outcome = commit_observations(run_key, params, selection, row_lists)

    targets = steps.proposal_targets(ctx, outcome.scope)
    cached_fetch = fetch_proposals.with_options(**_cached(["proposal_ids"], params, timedelta(days=1)))
    # A batch holding a proposal that failed on server trouble is fetched afresh, and its outcome is
    # not kept: a cached answer keeps its failures, and the same targets make the same batches (after
    # a whole outage they do), so it would hand the outage back to every run of the next day.
    fresh_fetch = fetch_proposals.with_options(cache_policy=NO_CACHE, persist_result=False)
    troubled = steps.transiently_failed_proposals(ctx)
    futures = [(fresh_fetch if troubled.intersection(batch) else cached_fetch).submit(run_key, params, batch)
               for batch in batches(targets, params.proposal_batch_size)]
    fetched, crashed = _outcomes(futures)
    commit_proposals(run_key, params, fetched)  # what did come back, failures too, even if a batch crashed
    if crashed is not None:
        raise crashed

    jobs, decided = steps.plan_preview_jobs(ctx, outcome.scope)
    steps.commit_previews(ctx, decided)
    job_batches = batches(jobs, params.preview_batch_size)
    planned_on = ctx.tables.manifest("previews")
    plan_digest = planned_on.digest if planned_on is not None else ""
    download = download_previews.with_options(
        **_cached(["jobs", "plan_digest"], params, timedelta(days=7), previews=True))
    progress = create_progress_artifact(0.0, key="ingest-progress", description="preview batches done")
    futures = download.map(unmapped(run_key), unmapped(params), job_batches, unmapped(plan_digest)) if job_batches else []
    pending: list[dict] = []
    crashed = None
    for done, future in enumerate(as_completed(futures), start=1):
        try:
            pending += future.result()
        except Exception as err:  # noqa: BLE001 - re-raised below, after committing the rest
            crashed = crashed or err
        if done % params.commit_every == 0:
            commit_previews(run_key, params, pending)
            pending = []
        update_progress_artifact(progress, 100.0 * done / max(1, len(job_batches)))
    commit_previews(run_key, params, pending)  # every batch that came back, even if one crashed
    if crashed is not None:
        raise crashed
    update_progress_artifact(progress, 100.0)

    digests = steps.finish(ctx, selection, outcome)
    result = stage_result(ctx, digests, before, started, planned=len(jobs), targets=len(targets), windows=len(pieces))
    s = result.stats
    create_table_artifact(
        [{"queried": s.get("queried", 0), "observations_written": s.get("observations_written", 0),
          "proposals_fetched": s.get("proposals_fetched", 0), "downloaded": s.get("previews_ok", 0),
          "skipped": s.get("previews_policy_skip", 0),
          "failed": sum(v for k, v in s.items() if k.startswith("previews_") and k[9:] in
                        ("http_error", "decode_error", "too_small", "too_large", "no_preview")),
          "quarantined": s.get("quarantined", 0)}],
        key="ingest-counts", description=f"ingest {result.digest[:12]} ({'nothing new' if result.cached else 'updated'})",
    )
    logger.info("ingest %s: %s", result.digest[:12], {k: v for k, v in s.items() if k != "table_digests"})
    return result


@flow(name="ingest-refresh", log_prints=False)
def refresh(params: IngestParams | None = None) -> StageResult:
    """Ingest what was released since the watermark (minus the overlap margin)."""
    params = params or IngestParams()
    fresh = IngestParams.model_validate({**params.model_dump(), "refresh": True, "since_mjd": None, "rebuild": False})
    return ingest(fresh)
