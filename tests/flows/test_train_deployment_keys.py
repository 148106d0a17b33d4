"""Which training run the pipeline waits for when training runs as a deployment (flows.stages._launch).

run_deployment with an idempotency key hands back the run that key already names. These tests give
it a fake registry of runs in given states and check the launcher reuses what is usable, never
reuses what cannot give a result, and never starts a second run beside one still going.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import flows.stages as stages
from schemas.stage import StageResult
from schemas.train import TrainParams

FINAL = {"COMPLETED": True, "FAILED": True, "CRASHED": True, "CANCELLED": True, "SCHEDULED": False,
         "RUNNING": False}


def _state(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, is_final=lambda: FINAL[name], is_completed=lambda: name == "COMPLETED")


class Registry:
    def __init__(self) -> None:
        self.runs: dict[str, SimpleNamespace] = {}
        self.launched: list[str] = []

    def __call__(self, deployment, *, parameters, idempotency_key, timeout):
        if idempotency_key not in self.runs:
            self.launched.append(idempotency_key)
            self.runs[idempotency_key] = SimpleNamespace(name=f"run-{len(self.runs)}", state=_state("SCHEDULED"))
        return self.runs[idempotency_key]


@pytest.fixture
def registry(monkeypatch) -> Registry:
    registry = Registry()
    monkeypatch.setattr(stages, "run_deployment", registry)
    return registry


def _attempt(monkeypatch, run_id: str = "task-1", run_count: int = 1) -> None:
    context = SimpleNamespace(task_run=SimpleNamespace(id=run_id, run_count=run_count))
    monkeypatch.setattr(stages, "TaskRunContext", SimpleNamespace(get=lambda: context))


def _params(tmp_path: Path, root: str = "v1") -> TrainParams:
    return TrainParams(data=str(tmp_path / root), dataset_version="abc123", preset="tiny")


def _record_result(params: TrainParams, tmp_path: Path) -> Path:
    run_dir = Path(params.data) / "runs" / "r1"
    (run_dir / "final").mkdir(parents=True)
    result = StageResult(stage="train", digest="d", outputs={"run_dir": str(run_dir), "final": str(run_dir / "final")})
    stages.write_remote_result(params, stages.record_present_outputs(result, params.data))
    return run_dir


def _launch(params: TrainParams):
    return stages._launch("train-stage/gpu", {"params": params.model_dump(mode="json")}, params)


def test_a_fresh_config_launches_once_under_its_key(tmp_path, registry, monkeypatch):
    _attempt(monkeypatch)
    params = _params(tmp_path)
    run = _launch(params)
    assert registry.launched == [stages.idempotency_key(params)] and run.state.name == "SCHEDULED"
    assert _launch(params) is run and len(registry.launched) == 1  # a double trigger finds it


def test_another_data_root_with_the_same_dataset_version_is_another_run(tmp_path):
    assert stages.idempotency_key(_params(tmp_path, "v1")) != stages.idempotency_key(_params(tmp_path, "v2"))


def test_a_completed_run_whose_files_exist_is_reused(tmp_path, registry, monkeypatch):
    _attempt(monkeypatch)
    params = _params(tmp_path)
    _record_result(params, tmp_path)
    done = registry(None, parameters={}, idempotency_key=stages.idempotency_key(params), timeout=0)
    done.state = _state("COMPLETED")
    assert _launch(params) is done and len(registry.launched) == 1
    assert stages._usable_result(params).digest == "d"


@pytest.mark.parametrize("ended", ["FAILED", "CRASHED", "CANCELLED", "COMPLETED"])
def test_a_run_that_cannot_give_a_result_is_not_reused(tmp_path, registry, monkeypatch, ended):
    _attempt(monkeypatch, "task-7")
    params = _params(tmp_path)
    if ended == "COMPLETED":  # completed once, but its run was deleted since
        run_dir = _record_result(params, tmp_path)
        (run_dir / "final").rmdir()
    old = registry(None, parameters={}, idempotency_key=stages.idempotency_key(params), timeout=0)
    old.state = _state(ended)
    run = _launch(params)
    assert run is not old and registry.launched[-1] == f"{stages.idempotency_key(params)}-task-7"


def test_a_retry_waits_for_the_run_its_first_attempt_launched(tmp_path, registry, monkeypatch):
    params = _params(tmp_path)
    key = stages.idempotency_key(params)
    registry(None, parameters={}, idempotency_key=key, timeout=0).state = _state("FAILED")
    _attempt(monkeypatch, "task-9", run_count=1)
    first = _launch(params)  # still running when the wait timed out
    _attempt(monkeypatch, "task-9", run_count=2)
    assert _launch(params) is first and registry.launched == [key, f"{key}-task-9"]
    first.state = _state("CRASHED")
    _attempt(monkeypatch, "task-9", run_count=3)
    again = _launch(params)
    assert again is not first and registry.launched[-1] == f"{key}-task-9-2"
