"""Prefect flow `build_dataset`: input tables -> an immutable dataset version (tasks.dataset).

The flow checks first whether the version these inputs and params name is already complete (then
it only moves `latest`: nothing is rebuilt). Otherwise it plans in its own process: the join, the
split and the cut of each split into shard-sized chunks (tasks.dataset.stage.plan_build, metadata
and file sizes only). The task `build-shard` is mapped over the chunks: each reads, checks and
encodes its chunk's images and writes its shard atomically, returning the shard's info and its
quarantine records as JSON. On the default thread runner the chunks run in this process; when the
pipeline runs the stage on Dask (flows.stages swaps the task runner), on the Dask workers. The flow
then writes the quarantine rows and the manifest (last) and moves `latest`.

The chunks, and so the shards' bytes and names, depend on the inputs and params only: a version
has the same id and the same shard sha256s whichever runner built it. The number of tasks is the
number of shards (each at least `shard_target_mb`, or a row group), never one per image.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from flows.caching import is_retryable
from flows.runners import ProgressLog, default_task_runner, map_in_order
from flows.secrets import prepare_secrets
from schemas.dataset import SPLITS, BuildDatasetParams
from schemas.stage import StageResult
from tasks.dataset.stage import (
    PlannedVersion,
    build_shard,
    built_version,
    finish_build,
    plan_build,
    plan_version,
)


@task(name="build-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=is_retryable)
def build_shard_task(params: BuildDatasetParams, version: str, chunk: dict[str, Any]) -> dict[str, Any]:
    """One chunk -> one shard, written atomically; JSON-safe info and quarantine records back."""
    prepare_secrets()  # a Dask worker has its own environment: S3 keys from Secret blocks
    return build_shard(params, version, chunk)


@flow(name="build_dataset", task_runner=default_task_runner(), log_prints=False)
def build_dataset(params: BuildDatasetParams | None = None) -> StageResult:
    """Join, split and shard the training set; returns a StageResult whose digest is the version id."""
    params = params or BuildDatasetParams()
    prepare_secrets()  # S3 keys from Secret blocks, when the environment has none
    logger = get_run_logger()
    planned = plan_version(params)  # the input manifests, read once for both steps
    result = built_version(params, planned)  # also moves `latest` to it
    if result is None:
        result = _build(params, planned, logger)
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


def _build(params: BuildDatasetParams, planned: PlannedVersion, logger: Any) -> StageResult:
    plan = plan_build(params, planned)
    logger.info("dataset %s: %d examples in %d shards", plan.version, len(plan.examples.examples), len(plan.chunks))
    progress = ProgressLog(logger, len(plan.chunks), "wrote %d of %d shards (%d%%)")
    # A failed shard lets the others finish: a retry of the stage rewrites them anyway.
    results = map_in_order(build_shard_task, [chunk.payload() for chunk in plan.chunks], params, plan.version,
                           on_result=lambda _: progress.add())
    return finish_build(plan, results)  # orders the results by the plan
