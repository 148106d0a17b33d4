"""The whole DAG: ingest -> summarize -> build_dataset -> train (+ shuffled control) -> evaluate.

Flows here are wiring (style P11): each stage is a cached, retried task around the stage's own
flow (flows.stages), keyed on its upstream manifest digests + config + code version, so

- a rerun with nothing new is a chain of cache hits and finishes in seconds;
- a new cycle reruns what its inputs changed: a new ingest digest reruns summarize, a new
  dataset version retrains; an unchanged dataset version never retrains.

`refresh` (for schedules) ingests from the watermark and reruns what changed. `rebuild` builds a
new data version from nothing while the current one stays readable, then moves `current`
(flows.versions). `train_stage` is the deployment the pipeline launches on a GPU pool.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel

from flows.caching import RESULT_SERIALIZER, outputs_still_present, record_present_outputs, stage_task_options
from flows.stages import STAGES, load_stage_flow, run_stage, write_remote_result
from flows.versions import (
    current_version,
    list_versions,
    new_version_id,
    prune_versions,
    publish_version,
    resolve_data_root,
    start_version,
)
from schemas.errors import InputError, missing_extra
from schemas.pipeline import PipelineParams, PipelineResult, RebuildParams, RefreshParams, StatusParams
from schemas.stage import StageResult
from schemas.train import TrainParams
from storage.fs import exists, join
from storage.layout import DataLayout
from storage.tables import TableStore
from tasks.mast.watermark import read_watermark

TRAIN_DEPLOYMENT_ENV = "HUBBLECLIP_TRAIN_DEPLOYMENT"


def _with_root(params: BaseModel, root: str, **changes: Any) -> Any:
    """A stage's params with `data` set to the pipeline's root (validated, unlike model_copy)."""
    return type(params).model_validate({**params.model_dump(), "data": root, **changes})


DASK_SCHEDULER_PORT = 8786  # Dask's default, for an address given without one


@contextlib.contextmanager
def _dask(params: PipelineParams) -> Iterator[str]:
    """The Dask scheduler address the scale-out stages use ('' = Prefect's thread pool)."""
    if params.task_runner != "dask":
        yield ""
        return
    if params.dask_address:
        check_scheduler_reachable(params.dask_address)
        yield params.dask_address
        return
    try:
        from distributed import LocalCluster  # installed with prefect-dask
    except ImportError:
        raise missing_extra("distributed", "dask", "task_runner='dask'") from None

    # One cluster for the whole run, shared by ingest, summarize and build (not one per subflow).
    # memory_limit=0: no spill-to-disk, whose directory <worker dir>/storage would sit first on the
    # worker's sys.path and shadow this project's `storage` package under an editable install.
    with LocalCluster(n_workers=params.dask_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit=0) as cluster:
        yield cluster.scheduler_address


def check_scheduler_reachable(address: str, timeout_s: float = 10.0) -> None:
    """InputError naming the address unless a TCP connection to it opens: otherwise the first
    scale-out stage finds out only after Dask's own connect timeouts and retries."""
    parsed = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port or DASK_SCHEDULER_PORT
    except ValueError as err:  # a port that is not a number
        raise InputError(f"dask_address (--dask) {address!r} is not host:port: {err}") from None
    if not host:
        raise InputError(f"dask_address (--dask) {address!r} names no host")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        raise InputError(f"no Dask scheduler answers at {address} (dask_address, --dask): "
                         f"{err.strerror or err}; start it, or give 'local' for a cluster on this machine") from None


class _StageRunner:
    """Calls `run_stage` with the cache settings of one data root and records what happened."""

    def __init__(self, root: str, *, refresh: bool, dask_address: str):
        self.root = root
        self.refresh = refresh
        self.dask_address = dask_address
        self.results: dict[str, StageResult] = {}
        self.hits: list[str] = []
        self.seconds: dict[str, float] = {}

    def __call__(self, stage: str, params: BaseModel, upstream: Mapping[str, str], *,
                 refresh: bool = False, expire: timedelta | None = None, deployment: str = "",
                 timeout_s: float | None = None) -> StageResult:
        spec = STAGES[stage]
        options = stage_task_options(self.root, refresh=self.refresh or refresh)
        if expire is not None:
            options["cache_expiration"] = expire
        started = time.perf_counter()
        call = dict(stage=stage, params=params, upstream=dict(upstream), code=spec.code,
                    dask_address=self.dask_address, deployment=deployment, timeout_s=timeout_s)
        task_ = run_stage.with_options(name=stage, task_run_name=stage, **options)
        state = task_(**call, return_state=True)
        result: StageResult = state.result()
        hit = state.name == "Cached"
        if hit and not (outputs_still_present(result, self.root) and _still_its_report(stage, result)):
            # The record outlived its files (data deleted or moved), or another evaluation has
            # replaced its report since: run the stage for real.
            get_run_logger().warning("%s: cached result names missing or replaced outputs; running it again", stage)
            options["refresh_cache"] = True
            state = run_stage.with_options(name=stage, task_run_name=stage, **options)(**call, return_state=True)
            result, hit = state.result(), False
        if hit or result.cached:
            self.hits.append(stage)
        result = result.model_copy(update={"cached": hit or result.cached})
        self.results[stage] = result
        self.seconds[stage] = round(time.perf_counter() - started, 3)
        return result


def _still_its_report(stage: str, result: StageResult) -> bool:
    """Only an evaluate result names a report that a later evaluation of its run can replace."""
    if stage != "evaluate" or "report_dir" not in result.outputs:
        return True
    from tasks.evaluate import report_is_its_own

    return report_is_its_own(result)


def run_pipeline(params: PipelineParams, *, root: str | None = None, version: str = "",
                 refresh_ingest: bool = False) -> PipelineResult:
    """The DAG body shared by `pipeline`, `refresh` and `rebuild` (call it inside a flow)."""
    logger = get_run_logger()
    started = time.perf_counter()
    root = root or resolve_data_root(params.data)
    deployment = params.train_deployment or os.environ.get(TRAIN_DEPLOYMENT_ENV, "").strip()
    with _dask(params) as dask_address:
        run = _StageRunner(root, refresh=params.refresh_cache, dask_address=dask_address)

        ingest_changes: dict[str, Any] = {}
        if refresh_ingest and read_watermark(DataLayout(root)) is not None:
            # From the watermark (minus the overlap); the very first refresh has none: a full ingest.
            ingest_changes = {"refresh": True, "since_mjd": None, "rebuild": False}
        ingest_ttl = timedelta(hours=params.ingest_cache_hours) if params.ingest_cache_hours > 0 else None
        ingested = run("ingest", _with_root(params.ingest, root, **ingest_changes), {},
                       refresh=refresh_ingest or ingest_ttl is None, expire=ingest_ttl)
        if params.runs_stage("summarize"):
            summarized = run("summarize", _with_root(params.summarize, root), {"ingest": ingested.digest})
        if params.runs_stage("dataset"):
            dataset = run("dataset", _with_root(params.dataset, root),
                          {"ingest": ingested.digest, "summarize": summarized.digest})
        if params.runs_stage("train"):
            # Pinned to the version just built: 'latest' would make the cache key lie.
            train_params = _with_root(params.train, root, dataset_version=dataset.digest)
            trained = run("train", train_params, {"dataset": dataset.digest}, deployment=deployment,
                          timeout_s=params.train_timeout_s)
            control = None
            if params.shuffled_control:
                control_params = _with_root(train_params, root, shuffled_pairs=True,
                                            run_name=f"{train_params.run_name}-shuffled" if train_params.run_name else None)
                control = run("train_control", control_params, {"dataset": dataset.digest},
                              deployment=deployment, timeout_s=params.train_timeout_s)
        if params.runs_stage("evaluate"):
            upstream = {"dataset": dataset.digest, "train": trained.digest}
            if control is not None:
                upstream["train_control"] = control.digest
            evaluate_params = _with_root(params.evaluate, root, **evaluate_inputs(params.evaluate, dataset,
                                                                                   trained, control))
            # Every model compared (auto variants: other runs on this dataset) and the ground truth's
            # contents, resolved without loading a model: a new run or an edited file is a new key.
            from tasks.evaluate import plan_evaluation

            upstream.update({f"evaluate:{k}": v for k, v in plan_evaluation(evaluate_params).inputs.items()})
            run("evaluate", evaluate_params, upstream)

    report = run.results.get("evaluate", StageResult(stage="evaluate", digest="")).outputs.get("report", "")
    result = PipelineResult(
        data=params.data, root=root, version=version or (current_version(params.data) or ""),
        stages=run.results, cache_hits=run.hits, report=report,
        elapsed_s=round(time.perf_counter() - started, 3), stats={"stage_seconds": run.seconds},
    )
    _publish_summary(result)
    logger.info("pipeline finished in %.1f s; cache hits: %s", result.elapsed_s, ", ".join(run.hits) or "none")
    return result


def evaluate_inputs(params: BaseModel, dataset: StageResult, trained: StageResult,
                    control: StageResult | None) -> dict[str, Any]:
    """Point evaluation at exactly what this pipeline run built and trained."""
    fields = type(params).model_fields
    changes: dict[str, Any] = {}
    if "dataset_version" in fields:
        changes["dataset_version"] = dataset.digest
    if "run" in fields:
        changes["run"] = _run_name(trained)
    if "shuffled_run" in fields and control is not None:
        changes["shuffled_run"] = _run_name(control)
    return changes


def _run_name(result: StageResult) -> str:
    """The training run a StageResult describes: its name, else its directory, else its digest."""
    return str(result.stats.get("run") or result.outputs.get("run_dir") or result.digest)


def _publish_summary(result: PipelineResult) -> None:
    rows = [{"stage": name, "cached": r.cached, "digest": r.digest[:16],
             "seconds": result.stats["stage_seconds"].get(name, 0.0)} for name, r in result.stages.items()]
    with contextlib.suppress(Exception):  # an artifact is a convenience; never fail the run for it
        create_table_artifact(rows, key="pipeline-stages", description=f"pipeline over {result.root}")


# -- flows ---------------------------------------------------------------------------------------

@flow(name="pipeline", persist_result=True, result_serializer=RESULT_SERIALIZER)
def pipeline(params: PipelineParams) -> PipelineResult:
    """Run every stage in order; unchanged stages are cache hits."""
    return run_pipeline(params)


@flow(name="refresh", persist_result=True, result_serializer=RESULT_SERIALIZER)
def refresh(params: RefreshParams) -> PipelineResult:
    """Scheduled: ingest new releases and cycles from the watermark, rerun only what changed."""
    return run_pipeline(params, refresh_ingest=True)


@flow(name="rebuild", persist_result=True, result_serializer=RESULT_SERIALIZER)
def rebuild(params: RebuildParams) -> PipelineResult:
    """From scratch into a new data version; `current` moves only once it is complete."""
    logger = get_run_logger()
    version = params.version or new_version_id()
    root = start_version(params.data, version)
    # The new root starts empty, so every stage works from nothing (stage-level caches live in the
    # root); refresh_cache makes Prefect ignore older records too. Stage params stay as a normal
    # run's, so the first pipeline run on the new version is all cache hits.
    pipe = PipelineParams.model_validate({**params.model_dump(exclude={"version", "keep_versions"}),
                                          "refresh_cache": True})
    previous = current_version(params.data)
    logger.info("rebuilding %s into version %s (current: %s)", params.data, version, previous or "flat root")
    result = run_pipeline(pipe, root=root, version=version)
    publish_version(params.data, version, {"previous": previous, "digests": {k: v.digest for k, v in
                                                                             result.stages.items()}})
    if params.keep_versions:
        removed = prune_versions(params.data, params.keep_versions)
        result.stats["pruned_versions"] = removed
    return result


@flow(name="train-stage", persist_result=True, result_serializer=RESULT_SERIALIZER)
def train_stage(params: TrainParams) -> StageResult:
    """Training as its own deployment (GPU pool): records its result beside the data for the
    pipeline that launched it, whose Prefect result storage this machine may not share."""
    result = load_stage_flow(STAGES["train"])(params)
    result = StageResult.model_validate(result.model_dump() if isinstance(result, BaseModel) else result)
    result = record_present_outputs(result, params.data)  # the launcher checks these are still there
    write_remote_result(params, result)
    return result


@flow(name="status", persist_result=True, result_serializer=RESULT_SERIALIZER)
def status(params: StatusParams) -> dict[str, Any]:
    """The data versions and each table's current manifest digest: a cheap health check."""
    root = resolve_data_root(params.data)
    tables = TableStore(DataLayout(root).tables)
    digests = {}
    for name in tables.names():
        manifest = tables.manifest(name)
        if manifest is not None:
            digests[name] = {"digest": manifest.digest, "rows": manifest.rows}
    latest = join(DataLayout(root).datasets, "latest")
    return {"data": params.data, "root": root, "current": current_version(params.data),
            "versions": list_versions(params.data), "tables": digests,
            "dataset_latest": exists(latest)}


def dag_mermaid() -> str:
    """The DAG as a Mermaid flowchart, generated from the stage registry (docs/deploy.md)."""
    lines = ["flowchart LR"]
    for spec in STAGES.values():
        lines.append(f'    {spec.name}["{spec.label or spec.name}<br/><code>{spec.flow_ref}</code>"]')
    for spec in STAGES.values():
        lines += [f"    {parent} --> {spec.name}" for parent in spec.after]
    return "\n".join(lines) + "\n"
