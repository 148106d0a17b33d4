"""A faulty archive changes nothing: ingest, summarize and build_dataset end exactly as a clean run.

The local archive injects the issue's faults (10% HTTP 503, 5% bodies cut short while
Content-Length announces the whole, MAST queries first answered EXECUTING, latency with spikes
longer than the client's read timeout) through the real astroquery client. The outputs must be
the clean run's, byte for byte: the same table digests (every file hash), the same dataset
version and shard hashes, the same quarantine rows (no fault may pass for a bad record).
"""

from __future__ import annotations

import pytest

from tasks.archive.server import FaultConfig
from tests.chaos.conftest import run_stage_inline
from tests.chaos.state import final_state, record_keys, state_diff
from tests.tasks.mast.conftest import ingest_params

pytestmark = pytest.mark.chaos

ISSUE_FAULTS = FaultConfig(latency_ms=2, fail_rate=0.10, truncate_rate=0.05, executing_rate=0.25,
                           spike_rate=0.03, spike_ms=1500, seed=9)
# Twice the rates, through astroquery's own download_file (HEAD + GET, errors as return values).
HARSH_FAULTS = FaultConfig(latency_ms=2, fail_rate=0.20, truncate_rate=0.10, executing_rate=0.5,
                           spike_rate=0.05, spike_ms=1500, seed=23)
READ_TIMEOUT_S = 1.0  # below spike_ms: a spike is a stalled server, cut by the timeout and retried


@pytest.mark.parametrize("faults, download_via", [
    pytest.param(ISSUE_FAULTS, "direct", id="issue-rates"),
    pytest.param(HARSH_FAULTS, "astroquery", id="double-rates-astroquery-download", marks=pytest.mark.slow),
])
def test_pipeline_under_faults_matches_a_clean_run(faults, download_via, archive, pipeline_reference, tmp_path,
                                                   monkeypatch, chaos_figures):
    monkeypatch.setenv("HUBBLECLIP_READ_TIMEOUT_S", str(READ_TIMEOUT_S))
    archive.configure(faults=faults)
    root = tmp_path / "data"
    from tasks.mast.stage import run_ingest

    # Windows split below the row limit: many paged queries meet the faults, not one. (The window
    # ends "now", which is in every query: the faults fall on other requests each run.)
    ingested = run_ingest(ingest_params(archive.url, root, max_rows_per_query=60, download_via=download_via))
    injected = archive.faults_injected
    log = archive.request_log
    statuses = [status for _, _, status in log]
    archive.configure(faults=FaultConfig())
    run_stage_inline("summarize", root)
    run_stage_inline("dataset", root)

    assert ingested.stats["windows"] > 1
    expected = final_state(pipeline_reference.after["dataset"])
    got = final_state(root)
    assert got == expected, state_diff(got, expected)
    assert not record_keys(pipeline_reference.after["dataset"]) - record_keys(root)
    # Every kind of fault was met, and more than a few times.
    assert statuses.count(503) == injected["fail"] > 10
    chaos_figures.faults["mast_queries"] += sum(1 for _, path, _ in log if path.startswith("/api/v0/invoke"))
    assert injected["truncate"] >= 1 and injected["executing"] >= 1 and injected["spike"] >= 1
    chaos_figures.faults.update(injected)
    chaos_figures.faults["requests"] += len(statuses)
