"""Test-session setup. Prefect and astroquery settings must be fixed before either is imported."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

# Prefect keeps results and cache records under PREFECT_HOME: isolate them per session so a cache
# hit can never leak from an earlier run (prefect-notes.md 5.3).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="hubbleclip-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)  # results of every run
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

pytest_plugins = ["tests.fixtures_archive"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared/ beside the checkout; tests that need it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared/ is not present here")
    return SHARED
