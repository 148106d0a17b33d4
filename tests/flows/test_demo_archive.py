"""The demo's archive: the port it had last time, or a new one when that port is taken."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.demo import ARCHIVE_RECORD, _serve
from tasks.archive.sky import generate_sky


@pytest.fixture(autouse=True)
def prefect_backend() -> Iterator[None]:
    """These tests run no flow: no Prefect server for them (overrides tests/flows/conftest.py's)."""
    yield


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_taken_saved_port_gets_a_new_one(tmp_path: Path, busy_port: int) -> None:
    sky = tmp_path / "sky"
    generate_sky(sky, proposals=2, mean_observations=2.0, bad_records=False, workers=1)
    (sky / ARCHIVE_RECORD).write_text(json.dumps({"port": busy_port}))
    with _serve(sky) as server:
        port = int(server.url.rsplit(":", 1)[1])
        assert port != busy_port
        assert json.loads((sky / ARCHIVE_RECORD).read_text()) == {"port": port}
