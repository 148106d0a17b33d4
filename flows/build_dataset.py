"""Prefect flow `build_dataset`: input tables -> an immutable dataset version (tasks.dataset).

The task is cached on the input manifests' digests + the params + the stage's code version
(flows.caching.ManifestDigests), so an unchanged input does not even start the build; under it,
run_build_dataset skips the work by itself when the version directory is complete.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger

from flows.caching import is_retryable, stage_task_options
from schemas.dataset import SPLITS, BuildDatasetParams
from schemas.stage import StageResult
from tasks.dataset import plan_version, run_build_dataset
from tasks.dataset.stage import complete_manifest
from tasks.dataset.versions import set_latest

CODE = ("flows.build_dataset", "tasks.dataset", "schemas.dataset", "storage", "schemas.manifest",
        "schemas.records", "schemas.arrow")


@task(name="build-dataset-version", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=is_retryable)
def build_dataset_version(params: BuildDatasetParams, upstream: dict[str, str],
                          code: tuple[str, ...] = CODE) -> StageResult:
    """Build (or find) the version; `upstream` and `code` are here for the cache key."""
    return run_build_dataset(params)


@flow(name="build_dataset", log_prints=False)
def build_dataset(params: BuildDatasetParams | None = None) -> StageResult:
    """Join, split and shard the training set; returns a StageResult whose digest is the version id."""
    params = params or BuildDatasetParams()
    logger = get_run_logger()
    version, upstream = plan_version(params)
    state = build_dataset_version.with_options(**stage_task_options(params.data, refresh=params.rebuild))(
        params, upstream, CODE, return_state=True)
    if state.is_completed() and state.name == "Cached" and complete_manifest(params.data, version) is None:
        # A cache record outlived its data (the version was garbage-collected): build it again.
        logger.info("cached result for dataset %s has no data behind it; rebuilding", version)
        state = build_dataset_version.with_options(**stage_task_options(params.data, refresh=True))(
            params, upstream, CODE, return_state=True)
    result: StageResult = state.result()
    if state.name == "Cached":
        result = result.model_copy(update={"cached": True})
    if params.set_latest:
        set_latest(params.data, result.digest)  # a cache hit skipped the task, not the pointer
    examples = result.stats.get("examples", {})
    proposals = result.stats.get("proposals", {})
    create_table_artifact(
        [{"split": s, "examples": examples.get(s, 0), "proposals": proposals.get(s, 0)} for s in SPLITS],
        key="dataset-manifest",
        description=f"dataset {result.digest} ({'cached' if result.cached else 'built'}); "
                    f"quarantined: {result.stats.get('quarantined', {})}",
    )
    logger.info("dataset %s: %s", result.digest, examples)
    return result
