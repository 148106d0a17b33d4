"""Each fault knob, as the client sees it; and fault sequences are reproducible per seed."""

from __future__ import annotations

import http.client
import time
from urllib.parse import urlsplit

import pytest
import requests
from pydantic import ValidationError

from tasks.archive.server import ArchiveServer, FaultConfig


def test_fail_rate_gives_http_503(archive: ArchiveServer) -> None:
    from astroquery.mast import Observations

    archive.configure(faults=FaultConfig(fail_rate=1.0))
    with pytest.raises(requests.HTTPError, match="503"):
        Observations.query_criteria_count(obs_collection="HST")
    assert archive.request_log[-1] == ("POST", "/api/v0/invoke", 503)


def test_executing_is_polled_through(archive: ArchiveServer) -> None:
    from astroquery.mast import Observations

    expected = Observations.query_criteria(obs_collection="HST", pagesize=40)
    pages = sum(path == "/api/v0/invoke" for _, path, _ in archive.request_log)
    assert pages >= 3
    archive.configure(faults=FaultConfig(executing_rate=1.0))
    archive.clear_log()
    table = Observations.query_criteria(obs_collection="HST", pagesize=40)
    assert list(table["obsid"]) == list(expected["obsid"])
    assert sum(path == "/api/v0/invoke" for _, path, _ in archive.request_log) == 2 * pages  # EXECUTING, then data


def test_truncated_bodies_are_detectable(archive: ArchiveServer, demo_sky) -> None:
    from astroquery.mast import Observations

    archive.configure(faults=FaultConfig(truncate_rate=1.0))
    parts = urlsplit(archive.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", "/health")
    response = connection.getresponse()
    declared = int(response.getheader("Content-Length"))
    with pytest.raises(http.client.IncompleteRead) as short:
        response.read()
    assert len(short.value.partial) < declared
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(f"{archive.url}/hst/proposal-abstracts/catalog.txt", timeout=10)
    with pytest.raises((requests.RequestException, ValueError)):
        Observations.query_criteria(obs_collection="HST")


def test_latency_is_measurable(archive: ArchiveServer) -> None:
    session = requests.Session()
    session.get(f"{archive.url}/health", timeout=10)
    started = time.perf_counter()
    session.get(f"{archive.url}/health", timeout=10)
    fast = time.perf_counter() - started
    archive.configure(faults=FaultConfig(latency_ms=250))
    started = time.perf_counter()
    session.get(f"{archive.url}/health", timeout=10)
    slow = time.perf_counter() - started
    assert slow >= 0.25 > fast


def _statuses(server: ArchiveServer, n: int = 40) -> list[int]:
    session = requests.Session()
    return [session.get(f"{server.url}/health?probe={i}", timeout=10).status_code for i in range(n)]


def test_fault_sequences_are_deterministic_per_seed(archive: ArchiveServer) -> None:
    archive.configure(faults=FaultConfig(fail_rate=0.5, seed=7))
    first = _statuses(archive)
    archive.configure(faults=FaultConfig(fail_rate=0.5, seed=7))
    again = _statuses(archive)
    archive.configure(faults=FaultConfig(fail_rate=0.5, seed=8))
    other = _statuses(archive)
    assert first == again != other
    assert set(first) == {200, 503}
    session = requests.Session()
    retries = [session.get(f"{archive.url}/health?probe=same", timeout=10).status_code for _ in range(30)]
    assert set(retries) == {200, 503}, "a retried request draws again, so a retry can succeed"


@pytest.mark.parametrize(
    "bad", [{"fail_rate": 1.5}, {"executing_rate": -0.1}, {"truncate_rate": 2}, {"latency_ms": -1}, {"seed": -3},
            {"fail_rat": 0.1}])
def test_fault_options_are_validated(bad: dict) -> None:
    with pytest.raises(ValidationError):
        FaultConfig(**bad)
