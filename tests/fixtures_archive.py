"""Shared archive fixtures, a pytest plugin (tests/conftest.py loads it with `pytest_plugins`).

- `demo_sky`: a generated sky of 25 proposals (seed 0) in a session temp dir. Read-only: tests that
  modify a sky generate their own.
- `archive_server`: one session ArchiveServer serving `demo_sky` with no faults. astroquery can
  talk to one MAST server per process (its URLs are fixed when astroquery.mast is first imported),
  so this fixture points astroquery at it BEFORE anything imports astroquery.mast, and every test
  reuses it. Import astroquery.mast inside tests, never at module top.
- `archive`: the same server for one test, reset afterwards (demo_sky content, no faults, empty
  request log), so a test may call `archive.configure(...)` freely.
- `archive_configured(server, **kw)`: the same reset as a context manager, for use inside a test.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.archive.server import ArchiveServer, FaultConfig

DEMO_SKY_PROPOSALS = 25
DEMO_SKY_SEED = 0


@pytest.fixture(scope="session")
def demo_sky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tasks.archive.sky import generate_sky

    path = tmp_path_factory.mktemp("archive") / "demo-sky"
    generate_sky(path, proposals=DEMO_SKY_PROPOSALS, seed=DEMO_SKY_SEED)
    return path


def _warm_astroquery() -> None:
    """Fetch both column configs now, fault-free: astroquery caches them for the whole process."""
    from astroquery.mast import Observations

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Observations.query_criteria_count(obs_collection="HST")
        Observations.get_product_list("0")


@pytest.fixture(scope="session")
def archive_server(demo_sky: Path) -> Iterator[ArchiveServer]:
    from tasks.mast_config import configure_astroquery

    server = ArchiveServer(sky_dir=demo_sky).start()
    try:
        configure_astroquery(server.url)
        _warm_astroquery()
        server.clear_log()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def archive_configured(server: ArchiveServer, default_sky: Path, **changes: Any) -> Iterator[ArchiveServer]:
    """Apply `changes` (sky_dir=, replay_dir=, faults=) for the block; restore the defaults after."""
    try:
        if changes:
            server.configure(**changes)
        server.clear_log()
        yield server
    finally:
        server.configure(sky_dir=default_sky, faults=FaultConfig())
        server.clear_log()


@pytest.fixture
def archive(archive_server: ArchiveServer, demo_sky: Path) -> Iterator[ArchiveServer]:
    with archive_configured(archive_server, demo_sky) as server:
        yield server
