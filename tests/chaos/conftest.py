"""The reliability suite's fixtures: one clean pipeline run to compare against, and the figures.

`pipeline_reference` runs every stage once, uninterrupted and fault-free, over the demo sky
(the ingest is the session's shared `reference_ingest`) and keeps a copy of the data root after
each stage: a kill test for stage S starts from the copy after the stage before S and must end
with exactly the state of the copy after S.

`chaos_figures` collects what the suite did (faults injected, kills survived, bad inputs tried,
records lost); the terminal summary prints it and, with HUBBLECLIP_CHAOS_FIGURES=path, writes it
as JSON (docs/reliability.md quotes it).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.state import STAGES
from tests.tasks.mast.conftest import ingest_params, reference_ingest  # noqa: F401 - shared fixture

FIGURES_ENV = "HUBBLECLIP_CHAOS_FIGURES"

# The smallest training that still checkpoints three times and validates once.
TRAIN_OPTIONS: dict[str, Any] = {"preset": "tiny", "steps": 6, "batch_size": 8, "warmup_steps": 1,
                                 "checkpoint_every": 2, "val_every": 6, "val_pairs": 100, "device": "cpu",
                                 "workers": 0, "seed": 0}


def stage_params(stage: str, data: Path | str, archive_url: str = "") -> Any:
    """The params every run of `stage` in this suite uses (the reference and the killed runs alike)."""
    data = str(data)
    if stage == "ingest":
        return ingest_params(archive_url, data)
    if stage == "summarize":
        from schemas.summary import SummarizeParams

        return SummarizeParams(data=data)
    if stage == "dataset":
        from schemas.dataset import BuildDatasetParams

        return BuildDatasetParams(data=data)
    if stage == "train":
        from schemas.train import TrainParams

        return TrainParams(data=data, **TRAIN_OPTIONS)
    if stage == "evaluate":
        from schemas.evaluate import EvaluateParams

        return EvaluateParams(data=data, device="cpu")
    raise ValueError(stage)


def run_stage_inline(stage: str, data: Path | str, archive_url: str = "") -> Any:
    params = stage_params(stage, data, archive_url)
    if stage == "ingest":
        from tasks.mast.stage import run_ingest

        return run_ingest(params)
    if stage == "summarize":
        from tasks.summarize.stage import run_summarize

        return run_summarize(params)
    if stage == "dataset":
        from tasks.dataset.stage import run_build_dataset

        return run_build_dataset(params)
    if stage == "train":
        from tasks.train.stage import run_train

        return run_train(params)
    from tasks.evaluate.stage import run_evaluate

    return run_evaluate(params)


@dataclass
class PipelineReference:
    after: dict[str, Path] = field(default_factory=dict)  # stage -> data root copy right after it
    results: dict[str, Any] = field(default_factory=dict)

    def before(self, stage: str) -> Path:
        return self.after[STAGES[STAGES.index(stage) - 1]]


@pytest.fixture(scope="session")
def pipeline_reference(reference_ingest, tmp_path_factory) -> PipelineReference:  # noqa: F811
    base = tmp_path_factory.mktemp("chaos-reference")
    ref = PipelineReference()
    ref.after["ingest"] = base / "ingest"
    shutil.copytree(reference_ingest, ref.after["ingest"])
    work = base / "work"
    shutil.copytree(reference_ingest, work)
    for stage in STAGES[1:]:
        ref.results[stage] = run_stage_inline(stage, work)
        ref.after[stage] = base / stage
        shutil.copytree(work, ref.after[stage])
    return ref


@pytest.fixture
def stage_root(tmp_path):
    """Copy the reference data root after `stage` into this test's own directory."""

    def copy(source: Path) -> Path:
        root = tmp_path / "data"
        shutil.copytree(source, root)
        return root

    return copy


# -- figures -------------------------------------------------------------------------------------
class ChaosFigures:
    def __init__(self) -> None:
        self.faults: Counter[str] = Counter()
        self.kills: list[str] = []
        self.bad_inputs: list[str] = []
        self.records_lost = 0
        self.orphans_collected = 0

    def as_dict(self) -> dict[str, Any]:
        return {"faults_injected": dict(sorted(self.faults.items())), "kills_survived": sorted(set(self.kills)),
                "bad_inputs_tried": sorted(set(self.bad_inputs)), "records_lost": self.records_lost,
                "orphans_collected_after_kills": self.orphans_collected}


_FIGURES = ChaosFigures()


@pytest.fixture(scope="session")
def chaos_figures() -> ChaosFigures:
    return _FIGURES


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001 - pytest hook
    figures = _FIGURES.as_dict()
    if not any((figures["faults_injected"], figures["kills_survived"], figures["bad_inputs_tried"])):
        return
    terminalreporter.section("chaos figures")
    terminalreporter.write_line(f"faults injected: {figures['faults_injected']}")
    terminalreporter.write_line(f"kills survived ({len(figures['kills_survived'])}): "
                                + ", ".join(figures["kills_survived"]))
    terminalreporter.write_line(f"bad inputs tried ({len(figures['bad_inputs_tried'])}): "
                                + ", ".join(figures["bad_inputs_tried"]))
    terminalreporter.write_line(f"records lost: {figures['records_lost']}; orphan files collected after kills: "
                                f"{figures['orphans_collected_after_kills']}")
    target = os.environ.get(FIGURES_ENV)
    if target:
        Path(target).write_text(json.dumps(figures, indent=2, sort_keys=True))
