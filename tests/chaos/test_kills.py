"""kill -9 every stage at chosen commit points, run it again: the uninterrupted run's outputs, exactly.

Each case starts the stage in a child process (`python -m tasks.mast`, `python -m tasks.train`, or
tests/chaos/stage_process.py for the others) with HUBBLECLIP_CHAOS_KILL_AT naming the point
(storage/chaos.py), so the process SIGKILLs itself there: deterministic, no sleeps. Then the
stage runs again and must leave

- the same final state as the uninterrupted reference run: every output's manifest digest
  (hence every file hash), the logs' rows, the watermark, the dataset version, the run's weights;
- no record lost, none duplicated;
- nothing done twice that was already stored: no preview or proposal document downloaded
  again, no abstract summarized again, training resumed from its last checkpoint;
- no orphan a reader could see, and after garbage collection none at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage import DataLayout, TableStore
from storage.chaos import KILL_ENV
from storage.gc import collect_garbage, find_orphans
from tests.chaos.conftest import TRAIN_OPTIONS, run_stage_inline, stage_params
from tests.chaos.state import duplicate_rows, final_state, record_keys, state_diff
from tests.tasks.mast.test_resume import _settled
from tests.tasks.mast.test_stage import downloads

pytestmark = pytest.mark.chaos

REPO = Path(__file__).resolve().parents[2]
KILL_TIMEOUT_S = 300


@dataclass(frozen=True)
class KillPoint:
    stage: str
    name: str
    spec: str  # the HUBBLECLIP_CHAOS_KILL_AT value
    points: tuple[str, ...] = ()  # functions stage_process turns into kill points
    sets: tuple[str, ...] = ()  # module constants stage_process overrides


KILL_POINTS = [
    KillPoint("ingest", "observations-committed", "fs.committed@*/tables/observations/_manifest.json"),
    KillPoint("ingest", "mid-proposal-documents", "fs.committed@*/cache/documents/*#2"),
    KillPoint("ingest", "proposals-manifest-unrenamed", "fs.tmp_written@*/tables/proposals/_manifest.json"),
    KillPoint("ingest", "previews-journaled-not-committed", "fs.committed@*/ingest-journal/previews/*#30"),
    KillPoint("ingest", "previews-commit-cut", "fs.tmp_written@*/tables/previews/_manifest.json#2"),
    KillPoint("ingest", "before-watermark", "fs.tmp_written@*/state/ingest-watermark.json"),
    KillPoint("summarize", "two-chunks-cached", "fs.committed@*/tables/summary_cache/_manifest.json#2",
              sets=("tasks.summarize.stage.CHUNK_ABSTRACTS=6",)),
    KillPoint("summarize", "summaries-manifest-unrenamed", "fs.tmp_written@*/tables/summaries/_manifest.json"),
    KillPoint("dataset", "mid-shards", "call@tasks.dataset.shards._AtomicFile.commit#2",
              points=("tasks.dataset.shards._AtomicFile.commit",)),
    KillPoint("dataset", "manifest-unrenamed", "fs.tmp_written@*/datasets/*/manifest.json"),
    KillPoint("dataset", "before-latest-pointer", "fs.committed@*/datasets/*/manifest.json"),
    KillPoint("train", "first-checkpoint", "fs.committed@*/checkpoints/last.pt#1"),
    KillPoint("train", "mid-checkpoint-write", "fs.tmp_written@*/checkpoints/step_4.pt"),
    KillPoint("train", "run-manifest-unrenamed", "fs.tmp_written@*/runs/*/manifest.json"),
    KillPoint("evaluate", "index-committed", "fs.committed@*/index/*/_manifest.json"),
    KillPoint("evaluate", "report-manifest-unrenamed", "fs.tmp_written@*/reports/*/manifest.json"),
]
# One point per data stage and training run in CI (`make test`); `make chaos` runs them all.
FAST = {"previews-journaled-not-committed", "two-chunks-cached", "manifest-unrenamed", "first-checkpoint"}


def _cases() -> list:
    marks = {False: [pytest.mark.slow], True: []}
    return [pytest.param(k, id=f"{k.stage}-{k.name}", marks=marks[k.name in FAST]) for k in KILL_POINTS]


def _command(point: KillPoint, root: Path, archive_url: str) -> list[str]:
    params = stage_params(point.stage, root, archive_url)
    if point.stage == "ingest":
        return [sys.executable, "-m", "tasks.mast", params.model_dump_json()]
    if point.stage == "train":  # the GPU boxes' own entry point
        flags = [f"--data={root}", "--log-level=DEBUG"]
        for key, value in TRAIN_OPTIONS.items():
            flags.append(f"--{key.replace('_', '-')}={value}")
        return [sys.executable, "-m", "tasks.train", *flags]
    command = [sys.executable, "-m", "tests.chaos.stage_process", point.stage, params.model_dump_json()]
    for dotted in point.points:
        command += ["--point", dotted]
    for item in point.sets:
        command += ["--set", item]
    return command


def run_until_killed(command: list[str], spec: str, *, env: dict[str, str] | None = None) -> str:
    """Run `command` with the kill point armed; assert it died there (SIGKILL); return its stderr."""
    environment = {**os.environ, **(env or {}), KILL_ENV: spec}
    proc = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=KILL_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL, (
        f"expected the process to die at {spec!r}; exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stderr


def _cached_documents(root: Path) -> set[str]:
    base = Path(DataLayout(str(root)).cache) / "documents"
    return {p.name.removesuffix(".missing") for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _document_requests(log: list[tuple[str, str, int]], base_url: str) -> set[str]:
    docs = [path for method, path, _ in log if method == "GET" and ("/hst-program-info/" in path
                                                                    or "/phase2-public/" in path or "catalog" in path)]
    return {hashlib.sha256(f"{base_url}{path}".encode()).hexdigest() for path in docs}


def _cache_keys(root: Path) -> set[str]:
    tables = TableStore(DataLayout(str(root)).tables)
    return {r["cache_key"] for r in tables.read_rows("summary_cache")}


@pytest.mark.parametrize("point", _cases())
def test_kill_then_rerun_ends_as_an_uninterrupted_run(point, pipeline_reference, archive, stage_root, tmp_path,
                                                      chaos_figures, caplog):
    reference = pipeline_reference.after[point.stage]
    if point.stage == "ingest":
        root = tmp_path / "data"
    else:
        root = stage_root(pipeline_reference.before(point.stage))
    run_until_killed(_command(point, root, archive.url), point.spec)

    # What the killed run had finished, which the rerun must not do again.
    params = stage_params(point.stage, root, archive.url)
    settled_previews, _ = _settled(params, root) if point.stage == "ingest" else (set(), 0)
    cached_documents = _cached_documents(root)
    cached_summaries = _cache_keys(root) if point.stage == "summarize" else set()
    resumable = any(Path(root).glob("runs/*/checkpoints/last.pt"))

    archive.clear_log()
    with caplog.at_level(logging.INFO):
        result = run_stage_inline(point.stage, root, archive.url)

    got, want = final_state(root), final_state(reference)
    assert got == want, state_diff(got, want)
    assert duplicate_rows(root) == {}
    lost = record_keys(reference) - record_keys(root)
    assert not lost
    if point.stage == "ingest":
        assert not set(downloads(archive.request_log)) & settled_previews, "a stored preview was downloaded again"
        assert not _document_requests(archive.request_log, archive.url) & cached_documents, \
            "a cached proposal document was fetched again"
    if point.stage == "summarize":
        reference_cache = _cache_keys(reference)
        assert result.stats["generated"] == len(reference_cache - cached_summaries)  # none summarized twice
    if point.stage == "train" and resumable:
        assert any("resuming run" in r.getMessage() for r in caplog.records), "training restarted from step 0"

    # Orphans: invisible to readers (the state above is read through manifests), then collected.
    orphans = find_orphans(str(root))
    collect_garbage(str(root))
    from tasks.dataset import gc_versions

    gc_versions(str(root), keep=100)
    assert find_orphans(str(root)) == []
    assert final_state(root) == final_state(reference)
    chaos_figures.kills.append(f"{point.stage}:{point.name}")
    chaos_figures.orphans_collected += len(orphans)
    chaos_figures.records_lost += len(lost)
