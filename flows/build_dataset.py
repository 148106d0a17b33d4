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

import os
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from flows.caching import is_retryable
from flows.secrets import prepare_secrets
from schemas.dataset import SPLITS, BuildDatasetParams
from schemas.stage import StageResult
from tasks.dataset.stage import build_shard, built_version, finish_build, plan_build

# Threads of the default runner: each shard task reads its images with a few threads of its own,
# and a shard task holds at most one row group and a bounded read-ahead window in memory.
THREADS = max(2, min(4, os.cpu_count() or 1))


@task(name="build-shard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10],
      retry_condition_fn=is_retryable)
def build_shard_task(params: BuildDatasetParams, version: str, chunk: dict[str, Any]) -> dict[str, Any]:
    """One chunk -> one shard, written atomically; JSON-safe info and quarantine records back."""
    prepare_secrets()  # a Dask worker has its own environment: S3 keys from Secret blocks
    return build_shard(params, version, chunk)


@flow(name="build_dataset", task_runner=ThreadPoolTaskRunner(max_workers=THREADS), log_prints=False)
def build_dataset(params: BuildDatasetParams | None = None) -> StageResult:
    """Join, split and shard the training set; returns a StageResult whose digest is the version id."""
    params = params or BuildDatasetParams()
    prepare_secrets()  # S3 keys from Secret blocks, when the environment has none
    logger = get_run_logger()
    result = built_version(params)  # also moves `latest` to it
    if result is None:
        result = _build(params, logger)
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


def _build(params: BuildDatasetParams, logger: Any) -> StageResult:
    plan = plan_build(params)
    logger.info("dataset %s: %d examples in %d shards", plan.version, len(plan.examples.examples), len(plan.chunks))
    payloads = [chunk.payload() for chunk in plan.chunks]
    futures = build_shard_task.map(unmapped(params), unmapped(plan.version), payloads) if payloads else []
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    for done, future in enumerate(as_completed(futures), start=1):
        try:
            results.append(future.result())
        except Exception as err:  # noqa: BLE001 - let the other shards finish: a retry rewrites them anyway
            errors.append(err)
            continue
        if done == len(futures) or done % max(1, len(futures) // 10) == 0:
            logger.info("wrote %d of %d shards", done, len(futures))
    if errors:
        raise errors[0]
    return finish_build(plan, results)  # orders the results by the plan
