"""Helpers for ingest tests against the local archive (tests/fixtures_archive.py)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from schemas.ingest import IngestParams
from storage import DataLayout, TableStore

CATALOG_PATH = "/hst/proposal-abstracts/catalog.txt"


def encoded_image(size: tuple[int, int], colour=(200, 10, 10), mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A one-colour image in `fmt` (grey level 128 for non-RGB modes): a preview a test can serve."""
    out = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 128).save(out, format=fmt)
    return out.getvalue()
KEYS = {"observations": "obsid", "proposals": "proposal_id", "previews": "obsid", "quarantine": "record_id"}


def ingest_params(server_url: str, data: Path | str, *, catalog: bool = True, **overrides: Any) -> IngestParams:
    values: dict[str, Any] = {
        "data": str(data), "mast_url": server_url, "stsci_url": server_url,
        "catalog_url": server_url + CATALOG_PATH if catalog else "",
        "retry_backoff_s": 0.02, "preview_batch_size": 16, "commit_every": 2,
    }
    values.update(overrides)
    return IngestParams.model_validate(values)


def snapshot(root: Path | str) -> dict[str, list[dict]]:
    """Every ingest table as sorted rows, without the quarantine time (a run's clock, not data)."""
    tables = TableStore(DataLayout(str(root)).tables)
    out = {}
    for name, key in KEYS.items():
        rows = tables.read_rows(name)
        for row in rows:
            row.pop("created_at", None)
        out[name] = sorted(rows, key=lambda r, key=key: (r[key], r.get("reason", "")))
    return out


def ground_truth(sky: Path) -> dict:
    return json.loads((sky / "ground_truth.json").read_text(encoding="utf-8"))


_REFERENCES: dict[str, Path] = {}


@pytest.fixture(scope="session")
def reference_ingest(archive_server, demo_sky, tmp_path_factory) -> Path:
    """One clean, uninterrupted ingest of the demo sky (with the catalog): the tables to match.

    Computed once per session even though tests/flows imports this fixture too (pytest would
    otherwise run one per place it is defined).
    """
    from tasks.mast.stage import run_ingest
    from tests.fixtures_archive import archive_configured

    key = f"{archive_server.url}|{demo_sky}"
    if key not in _REFERENCES:
        root = tmp_path_factory.mktemp("ingest") / "reference"
        with archive_configured(archive_server, demo_sky):
            run_ingest(ingest_params(archive_server.url, root))
        _REFERENCES[key] = root
    return _REFERENCES[key]


@pytest.fixture
def reference_copy(reference_ingest, tmp_path) -> Path:
    """A writable copy of the reference data root."""
    copy = tmp_path / "data"
    shutil.copytree(reference_ingest, copy)
    return copy
