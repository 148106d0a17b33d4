"""The `evaluate` Prefect flow: it runs the stage, publishes artifacts, and is cached on the
checkpoint hashes and dataset version (a second run with the same inputs is a cache hit)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas.evaluate import EvaluateParams
from tests.tasks.evaluate.conftest import build_trained_data


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    source = build_trained_data(tmp_path_factory.mktemp("evaldata"))
    copy = tmp_path_factory.mktemp("flowdata") / "data"
    shutil.copytree(source["data"], copy, ignore=shutil.ignore_patterns("reports", "index", "state"))
    return str(copy)


def _task_states(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [r.state_name for r in runs if r.name.startswith("evaluate-models")]


def test_flow_evaluates_publishes_and_caches(data_root):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.evaluate import evaluate

    params = EvaluateParams(data=data_root, run="colors", ground_truth=str(Path(data_root) / "ground_truth.json"),
                            device="cpu")
    first_state = evaluate(params, return_state=True)
    assert first_state.is_completed()
    first = first_state.result()
    report = json.loads(Path(first.outputs["report"]).read_text())
    assert {"finetuned", "base", "shuffled"} <= set(report["models"])
    assert Path(first.outputs["index"]).exists()
    assert _task_states(first_state.state_details.flow_run_id) == ["Completed"]

    with get_client(sync_client=True) as client:
        keys = {a.key for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["evaluation-report", "evaluation-models"])))}
    assert keys == {"evaluation-report", "evaluation-models"}

    second_state = evaluate(params, return_state=True)
    assert second_state.result().digest == first.digest
    assert _task_states(second_state.state_details.flow_run_id) == ["Cached"]


def test_flow_reevaluates_when_the_report_was_deleted(data_root):
    from flows.evaluate import evaluate

    params = EvaluateParams(data=data_root, run="colors", ground_truth=str(Path(data_root) / "ground_truth.json"),
                            device="cpu")
    first = evaluate(params)  # a cache hit after the test above
    shutil.rmtree(Path(first.outputs["report_dir"]))
    again = evaluate(params)
    assert Path(again.outputs["report"]).exists()
    index = Path(again.outputs["index"])
    shutil.rmtree(index) if index.is_dir() else index.unlink()
    assert Path(evaluate(params).outputs["index"]).exists()


def test_flow_returns_each_configurations_own_report_when_they_alternate(data_root):
    # reports/<run>/ holds one report: after heldout, test, heldout, the Prefect cache record of the
    # first heldout run names files that the test run has since replaced.
    from flows.evaluate import evaluate

    heldout = EvaluateParams(data=data_root, run="colors", split="heldout", build_index=False, device="cpu")
    test = heldout.model_copy(update={"split": "test"})
    seen, states = [], []
    for params in (heldout, test, heldout, heldout):
        state = evaluate(params, return_state=True)
        result = state.result()
        report = json.loads(Path(result.outputs["report"]).read_text())
        seen.append((report["split"], report["n_items"], result.stats["n_items"]))
        states.append(sorted(_task_states(state.state_details.flow_run_id)))
    assert seen == [("heldout", 72, 72), ("test", 60, 60), ("heldout", 72, 72), ("heldout", 72, 72)]
    # The third run's cache hit is refused and the work done again; the fourth's stands.
    assert states == [["Completed"], ["Completed"], ["Cached", "Completed"], ["Cached"]]
