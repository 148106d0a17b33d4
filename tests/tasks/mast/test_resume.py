"""kill -9 an ingest anywhere, run it again: the same tables as an uninterrupted run, nothing fetched twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.records import PreviewImage
from storage import DataLayout, TableStore
from tasks.archive.server import FaultConfig
from tasks.mast.journal import PreviewJournal
from tasks.mast.stage import run_ingest
from tasks.mast.steps import config_digest
from tests.tasks.mast.conftest import ingest_params, snapshot
from tests.tasks.mast.test_stage import downloads

REPO = Path(__file__).resolve().parents[3]


def _images(root: Path) -> int:
    images = root / "images"
    return sum(1 for _ in images.rglob("*.jpg")) if images.is_dir() else 0


def _tables_exist(root: Path, *names: str) -> bool:
    return all((root / "tables" / name / "_manifest.json").is_file() for name in names)


def _settled(params, root: Path) -> tuple[set[str], int]:
    """Sources of previews the killed run had recorded (journal or table), and how many only journaled."""
    journal = PreviewJournal(DataLayout(str(root)).state, config_digest(params.preview_config()))
    pending: list[PreviewImage] = list(journal.load().values())
    rows = pending + [PreviewImage.model_validate(r)
                      for r in TableStore(DataLayout(str(root)).tables).read_rows("previews")]
    return {r.source_url for r in rows if r.status != "policy_skip" and r.source_url}, len(pending)


@pytest.mark.chaos
@pytest.mark.parametrize("kill_when", ["proposals_committed", "some_previews"])
def test_kill_9_then_rerun_matches_an_uninterrupted_run(archive, tmp_path, reference_ingest, kill_when):
    root = tmp_path / "data"
    params = ingest_params(archive.url, root, preview_batch_size=8, commit_every=3)
    # Latency stretches the run so the kill lands mid-way; the subprocess is a plain `python -m`.
    archive.configure(faults=FaultConfig(latency_ms=40))
    proc = subprocess.Popen([sys.executable, "-m", "tasks.mast", params.model_dump_json()], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when == "proposals_committed" and _tables_exist(root, "proposals"):
                break
            if kill_when == "some_previews" and _images(root) >= 25:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the ingest finished before it could be killed; raise the latency"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    settled, journaled = _settled(params, root)
    if kill_when == "some_previews":
        assert journaled, "no outcome was waiting in the journal: the recovery path is not exercised"
    archive.configure(faults=FaultConfig())
    archive.clear_log()
    run_ingest(params)
    assert snapshot(root) == snapshot(reference_ingest)
    assert not set(downloads(archive.request_log)) & settled  # nothing already stored is fetched again
