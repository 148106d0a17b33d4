"""The pipeline's stages as cached, retried Prefect tasks around the stages' own flows.

Each stage runs as a subflow (its own run in the UI, its own task runner) inside one task whose
cache key is its upstream manifest digests + its params + its code version (flows.caching). So a
stage is skipped twice over: by Prefect when the key is unchanged, and, when Prefect's records are
gone or refreshed, by the stage itself, which compares its output manifest's recorded inputs and
config (stage-level content caching that works without Prefect).

Training can run elsewhere: `train_via_deployment` launches the `train-stage` deployment on a GPU
work pool with `run_deployment`, keyed for idempotency by data root + config hash (so a retry or a
double trigger finds the same run, and a run that can no longer give a result is replaced), waits for
it, and fails when the child fails (run_deployment alone does not: prefect-notes.md 4.5).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prefect import Flow, task
from prefect.client.orchestration import get_client
from prefect.context import TaskRunContext
from prefect.deployments import run_deployment
from prefect.logging import get_run_logger
from pydantic import BaseModel

from flows.caching import (
    RESULT_SERIALIZER,
    STAGE_CACHE_POLICY,
    config_hash,
    is_retryable,
    outputs_still_present,
    record_present_outputs,
)
from flows.secrets import prepare_secrets
from schemas.errors import InputError, PermanentRemoteError, RemoteError, missing_extra
from schemas.stage import StageResult
from schemas.train import TrainParams
from storage.fs import atomic_write_text, exists, join, read_text

STAGE_RETRIES = 2


@dataclass(frozen=True)
class StageSpec:
    """One node of the DAG: which flow runs it and which code its cache key covers."""

    name: str
    flow_ref: str  # "module:attribute" of the stage's Prefect flow
    code: tuple[str, ...]  # modules (packages recurse) hashed into the stage's code version
    after: tuple[str, ...] = ()
    scale_out: bool = False  # runs its tasks on Dask when the pipeline is configured for it
    label: str = ""


# schemas.vocabulary: the 77 classes and the paper's queries feed summaries (extractive) and the
# evaluation; an edit there must miss the pipeline's stage caches too.
_SHARED_CODE = ("storage", "schemas.stage", "schemas.manifest", "schemas.records", "schemas.arrow",
                "schemas.vocabulary")

STAGES: dict[str, StageSpec] = {
    "ingest": StageSpec(
        "ingest", "flows.ingest:ingest", ("flows.ingest", "tasks.mast", "tasks.mast_config", "schemas.ingest",
                                          *_SHARED_CODE), (), True, "ingest (MAST + STScI)"),
    "summarize": StageSpec(
        "summarize", "flows.summarize:summarize", ("flows.summarize", "tasks.summarize", "schemas.summary",
                                                   *_SHARED_CODE), ("ingest",), True, "summarize abstracts"),
    "dataset": StageSpec(
        "dataset", "flows.build_dataset:build_dataset", ("flows.build_dataset", "tasks.dataset", "schemas.dataset",
                                                         *_SHARED_CODE), ("ingest", "summarize"), True,
        "build dataset version"),
    "train": StageSpec(
        "train", "flows.train:train", ("flows.train", "tasks.train", "schemas.train", *_SHARED_CODE),
        ("dataset",), False, "fine-tune CLIP"),
    "train_control": StageSpec(
        "train_control", "flows.train:train", ("flows.train", "tasks.train", "schemas.train", *_SHARED_CODE),
        ("dataset",), False, "shuffled-pairs control"),
    "evaluate": StageSpec(
        # Also the embedding's normalisation and the trained-model loader (tasks.evaluate.stage.EVAL_CODE).
        "evaluate", "flows.evaluate:evaluate", ("flows.evaluate", "tasks.evaluate", "schemas.evaluate",
                                                "tasks.dataset.augment", "tasks.train.export", *_SHARED_CODE),
        ("dataset", "train", "train_control"), False,
        "evaluate + report"),
}


def load_stage_flow(spec: StageSpec) -> Flow:
    module_name, attribute = spec.flow_ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise InputError(f"stage {spec.name!r} needs {module_name} ({err})") from err
    flow_obj = getattr(module, attribute, None)
    if not isinstance(flow_obj, Flow):
        raise InputError(f"{spec.flow_ref} is not a Prefect flow")
    return flow_obj


def _dask_runner(address: str) -> Any:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise missing_extra("prefect-dask", "dask", "task_runner='dask'") from None

    return DaskTaskRunner(address=address)


@task(
    name="stage",
    cache_policy=STAGE_CACHE_POLICY,
    persist_result=True,
    result_serializer=RESULT_SERIALIZER,
    retries=STAGE_RETRIES,
    retry_delay_seconds=[1, 5],
    retry_jitter_factor=0.2,
    retry_condition_fn=is_retryable,
)
def run_stage(
    stage: str,
    params: BaseModel,
    upstream: Mapping[str, str],
    code: tuple[str, ...],
    dask_address: str = "",
    deployment: str = "",
    timeout_s: float | None = None,
) -> StageResult:
    """Run one stage's flow as a subflow. Only `upstream`, `params` and `code` enter the cache key:
    where the work runs (Dask, a deployment) does not change what it produces."""
    prepare_secrets()  # S3 keys etc. from Secret blocks, when the environment has none
    spec = STAGES[stage]
    if deployment:
        if not isinstance(params, TrainParams):
            raise InputError(f"only training runs as a deployment, not {stage!r}")
        return record_present_outputs(train_via_deployment(deployment, params, timeout_s=timeout_s), params.data)
    flow_obj = load_stage_flow(spec)
    if dask_address and spec.scale_out:
        flow_obj = flow_obj.with_options(task_runner=_dask_runner(dask_address))
    result = flow_obj(params)
    result = StageResult.model_validate(result.model_dump() if isinstance(result, BaseModel) else result)
    return record_present_outputs(result, getattr(params, "data", ""))


# -- training on another work pool ----------------------------------------------------------------

def remote_result_path(params: TrainParams) -> str:
    """Where a `train-stage` run records its StageResult: beside the data, readable by the parent
    on any machine that sees the data root (shared disk or S3), with no shared Prefect storage."""
    return join(params.data, "state", "pipeline", "remote", f"train-{config_hash(params)[:32]}.json")


def write_remote_result(params: TrainParams, result: StageResult) -> str:
    path = remote_result_path(params)
    atomic_write_text(path, result.model_dump_json(indent=2))
    return path


def idempotency_key(params: TrainParams) -> str:
    """Data root + config hash (dataset version included): a parent retry or a double trigger finds
    the same run. The root is in it because a rebuild into a new version root can name the same
    dataset version (ids are content hashes) and must still train there."""
    return f"train-{params.dataset_version}-{config_hash(params.model_dump())[:16]}"


def _usable_result(params: TrainParams) -> StageResult | None:
    """The result a completed `train-stage` run recorded, if its files are all still there."""
    path = remote_result_path(params)
    if not exists(path):
        return None
    result = StageResult.model_validate(json.loads(read_text(path)))
    return result if outputs_still_present(result, params.data) else None


def _ended_unusable(flow_run: Any, params: TrainParams) -> bool:
    state = flow_run.state
    if state is None or not state.is_final():
        return False  # scheduled or running: wait for it
    return not state.is_completed() or _usable_result(params) is None


def _launch(deployment: str, payload: dict[str, Any], params: TrainParams) -> Any:
    """The training run to wait for: the one the idempotency key names, unless it ended unusable
    (failed, crashed, cancelled, or completed but its run was deleted since). Then this task run
    gets keys of its own: the same on the task's next retry, so a retry after a wait timed out
    waits for the run already launched instead of starting a second one into the same run dir.
    """
    key = idempotency_key(params)
    context = TaskRunContext.get()
    own = str(context.task_run.id) if context else str(time.time_ns())
    attempts = context.task_run.run_count if context else 1
    candidates = [key, f"{key}-{own}"] + [f"{key}-{own}-{n}" for n in range(2, attempts + 1)]
    for candidate in candidates:
        flow_run = run_deployment(deployment, parameters=payload, idempotency_key=candidate, timeout=0)
        if not _ended_unusable(flow_run, params):
            break
    return flow_run


def _wait_final(flow_run_id: Any, timeout_s: float | None, poll_s: float = 2.0) -> Any:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            if deadline is not None and time.monotonic() > deadline:
                raise RemoteError(f"training run {flow_run.name} still {flow_run.state_name} after {timeout_s:.0f} s")
            time.sleep(poll_s)


def train_via_deployment(deployment: str, params: TrainParams, *, timeout_s: float | None = None) -> StageResult:
    """Launch training as a deployment run (e.g. on the GPU pool), wait, and fail if it failed."""
    logger = get_run_logger()
    flow_run = _launch(deployment, {"params": params.model_dump(mode="json")}, params)
    logger.info("training runs as deployment %s: flow run %s", deployment, flow_run.name)
    final = _wait_final(flow_run.id, timeout_s)
    if not final.state.is_completed():
        # FAILED: the child ran and its own retries are spent, so launching it again would fail the
        # same way. CRASHED (lost worker, killed pod) or CANCELLED may pass on a new attempt.
        error = PermanentRemoteError if final.state.is_failed() else RemoteError
        raise error(
            f"training deployment {deployment} run {final.name} ended {final.state_name}: "
            f"{final.state.message or 'see its logs'}"
        )
    result = _usable_result(params)
    if result is None:
        raise RemoteError(f"training run {final.name} completed but its result at {remote_result_path(params)} "
                          "is missing or names files that are gone")
    return result
