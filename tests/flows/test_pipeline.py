"""The pipeline flow against the real local Prefect (session harness) and the local archive.

A handful of proposals from the session sky, a few training steps: every stage's real code runs.
The second run is all cache hits; a changed training config retrains and nothing upstream; a
stage that fails once with a transient error is retried; a user error is not; a new cycle reruns
the stages its data reaches; a rebuild writes a new data version and only then moves `current`.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

from flows.pipeline import pipeline, rebuild, refresh
from flows.versions import current_version, resolve_data_root
from schemas.errors import InputError, RemoteError
from schemas.pipeline import PipelineParams, RebuildParams, RefreshParams
from schemas.stage import StageResult
from tests.fixtures_archive import archive_configured

ALL_STAGES = {"ingest", "summarize", "dataset", "train", "train_control", "evaluate"}


def _params(data: Path, url: str, ground_truth: Path, model: type[PipelineParams] = PipelineParams, **changes):
    base = {
        "data": str(data),
        "ingest": {"mast_url": url, "stsci_url": url, "max_proposals": 6, "max_images_per_proposal": 4},
        # Six proposals: half held out, so evaluation has a test split to measure.
        "dataset": {"train_fraction": 0.5, "val_fraction": 0.0, "test_fraction": 0.5},
        "train": {"steps": 3, "batch_size": 8, "warmup_steps": 1, "val_every": 3, "checkpoint_every": 3,
                  "val_pairs": 100, "device": "cpu"},
        "evaluate": {"ground_truth": str(ground_truth), "build_index": False, "device": "cpu"},
    }
    for key, value in changes.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return model.model_validate(base)


@pytest.fixture(scope="module")
def first_run(archive_server, demo_sky, tmp_path_factory):
    """One full pipeline run over a fresh data root, shared by the tests that build on it."""
    data = tmp_path_factory.mktemp("pipeline") / "data"
    params = _params(data, archive_server.url, demo_sky / "ground_truth.json")
    with archive_configured(archive_server, demo_sky):
        result = pipeline(params)
    return params, result


def test_first_run_runs_every_stage_and_reports(first_run):
    params, result = first_run
    assert set(result.stages) == ALL_STAGES
    assert result.cache_hits == []
    assert not any(stage.cached for stage in result.stages.values())
    report = Path(result.report)
    assert report.name == "report.json" and report.is_file()
    assert {"finetuned", "shuffled"} <= set(json.loads(report.read_text())["models"])


def _stage_task_runs(flow_run_id, stages: set[str], timeout: float = 20.0) -> dict[str, object]:
    """The pipeline run's stage task runs, once the API has recorded all of them in a final state
    (task run states reach the API as events, a moment after the run returns)."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
        named = {run.name: run for run in runs if run.name in stages}
        if set(named) == stages and all(run.state.is_final() for run in named.values()):
            return named
        assert time.monotonic() < deadline, {name: run.state.name for name, run in named.items()}
        time.sleep(0.25)


def test_second_run_is_all_cache_hits(first_run, archive_server, demo_sky):
    params, first = first_run
    with archive_configured(archive_server, demo_sky):
        state = pipeline(params, return_state=True)
    second = state.result()
    assert set(second.cache_hits) == ALL_STAGES
    assert {k: v.digest for k, v in second.stages.items()} == {k: v.digest for k, v in first.stages.items()}
    assert second.report == first.report
    # Prefect itself served every stage from its cache: no stage's flow ran again.
    runs = _stage_task_runs(state.state_details.flow_run_id, ALL_STAGES)
    assert {name: run.state.name for name, run in runs.items()} == {name: "Cached" for name in ALL_STAGES}
    assert second.elapsed_s < first.elapsed_s


def test_changed_training_config_retrains_nothing_upstream(first_run, archive_server, demo_sky):
    params, first = first_run
    changed = _params(Path(params.data), archive_server.url, demo_sky / "ground_truth.json", until="train",
                      shuffled_control=False, train={"steps": 2, "val_every": 2, "checkpoint_every": 2})
    with archive_configured(archive_server, demo_sky):
        result = pipeline(changed)
    assert result.cache_hits == ["ingest", "summarize", "dataset"]
    assert result.stages["dataset"].digest == first.stages["dataset"].digest
    assert result.stages["train"].digest != first.stages["train"].digest


def test_evaluation_reruns_when_its_ground_truth_file_changes_in_place(first_run, archive_server, demo_sky,
                                                                      tmp_path):
    params, _ = first_run
    truth = tmp_path / "ground_truth.json"
    truth.write_text((demo_sky / "ground_truth.json").read_text())
    own = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"ground_truth": str(truth)})})
    with archive_configured(archive_server, demo_sky):
        pipeline(own)
        truth.write_text(truth.read_text() + "\n\n")  # same path, same truth, new bytes
        again = pipeline(own)
    assert "evaluate" not in again.cache_hits and {"ingest", "summarize", "dataset", "train"} <= set(again.cache_hits)


def test_a_cached_evaluation_whose_report_another_config_replaced_runs_again(first_run, archive_server, demo_sky):
    from flows.pipeline import _with_root, evaluate_inputs
    from tasks.evaluate import run_evaluate

    params, first = first_run
    stages = first.stages
    ours = _with_root(params.evaluate, first.root, **evaluate_inputs(
        params.evaluate, stages["dataset"], stages["train"], stages["train_control"]))
    run_evaluate(ours.model_copy(update={"split": "test"}))  # reports/<run>/ now holds the test split's
    with archive_configured(archive_server, demo_sky):
        again = pipeline(params)
    assert "evaluate" not in again.cache_hits
    assert json.loads(Path(again.report).read_text())["split"] == params.evaluate.split


def _flaky(module_name: str, attribute: str, error: Exception, monkeypatch, failures: int = 1) -> list[int]:
    """Replace a stage's flow with one that raises `error` `failures` times, then runs the real one."""
    module = importlib.import_module(module_name)
    real = getattr(module, attribute)
    calls: list[int] = []

    @flow(name=real.name)
    def flaky(params=None) -> StageResult:  # noqa: ANN001 - passed through to the real flow as given
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return real(params)

    monkeypatch.setattr(module, attribute, flaky)
    return calls


def test_a_stage_failing_once_is_retried(first_run, archive_server, demo_sky, monkeypatch):
    params, first = first_run
    calls = _flaky("flows.build_dataset", "build_dataset", RemoteError("shard store timed out"), monkeypatch)
    rerun = params.model_copy(update={"until": "dataset", "refresh_cache": True})
    with archive_configured(archive_server, demo_sky):
        state = pipeline(rerun, return_state=True)
    assert state.is_completed()
    assert len(calls) == 2
    runs = _stage_task_runs(state.state_details.flow_run_id, {"ingest", "summarize", "dataset"})
    assert runs["dataset"].run_count == 2 and runs["dataset"].state.is_completed()
    assert state.result().stages["dataset"].digest == first.stages["dataset"].digest


def test_a_user_error_is_not_retried_and_fails_the_run(first_run, archive_server, demo_sky, monkeypatch):
    params, _ = first_run
    calls = _flaky("flows.build_dataset", "build_dataset", InputError("bad split fractions"), monkeypatch, failures=9)
    rerun = params.model_copy(update={"until": "dataset", "refresh_cache": True})
    with archive_configured(archive_server, demo_sky):
        state = pipeline(rerun, return_state=True)
    assert state.is_failed()
    assert len(calls) == 1


def test_new_cycle_reruns_what_it_reaches(archive_server, demo_sky, tmp_path):
    from tasks.archive.sky import extend_sky, generate_sky

    sky = tmp_path / "sky"
    generate_sky(sky, proposals=4, seed=3, mean_observations=3, bad_records=False)
    data = tmp_path / "data"
    params = _params(data, archive_server.url, sky / "ground_truth.json", RefreshParams, until="dataset",
                     ingest={"max_proposals": None})
    with archive_configured(archive_server, demo_sky, sky_dir=sky) as server:
        before = refresh(params)
        unchanged = refresh(params)
        extend_sky(sky, proposals=2, seed=4)
        server.configure(sky_dir=sky)
        after = refresh(params)
    # Nothing new: ingest looked (refresh always asks the archive) and found the same data.
    assert unchanged.stages["ingest"].digest == before.stages["ingest"].digest
    assert set(unchanged.cache_hits) == {"ingest", "summarize", "dataset"}
    # A new cycle: every stage it reaches runs, and the dataset is a new version.
    assert after.stages["ingest"].digest != before.stages["ingest"].digest
    assert after.cache_hits == []
    assert after.stages["dataset"].digest != before.stages["dataset"].digest


def test_rebuild_switches_current_only_when_complete(first_run, archive_server, demo_sky):
    params, first = first_run
    data = Path(params.data)
    rebuild_params = _params(data, archive_server.url, demo_sky / "ground_truth.json", RebuildParams,
                             until="dataset", version="v-test")
    with archive_configured(archive_server, demo_sky):
        result = rebuild(rebuild_params)
    assert current_version(str(data)) == "v-test"
    assert resolve_data_root(str(data)) == str(data / "versions" / "v-test") == result.root
    assert result.cache_hits == []  # caches refreshed: everything ran again, into the new root
    assert (data / "versions" / "v-test" / "tables").is_dir()
    assert Path(first.report).is_file()  # the previous (flat) data stays where it was
    # The pipeline now reads the new version: a rerun there is all cache hits.
    again = pipeline(params.model_copy(update={"until": "dataset"}))
    assert again.root == result.root and set(again.cache_hits) == {"ingest", "summarize", "dataset"}


def test_docs_diagram_is_generated_from_the_code():
    from flows.pipeline import dag_mermaid

    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    assert "```mermaid\n" + dag_mermaid() + "```" in docs


def test_cli_commands_have_help_and_print_the_dag():
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.pipeline import dag_mermaid

    runner = CliRunner()
    for command in ("pipeline", "rebuild", "demo"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["pipeline", "--dag"])
    assert result.exit_code == 0 and result.stdout == dag_mermaid()
    bad = runner.invoke(app, ["pipeline", "--until", "nowhere"])
    assert bad.exit_code != 0
