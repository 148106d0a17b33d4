"""Per-record outcomes written the moment they exist, folded into the tables later.

A preview is downloaded, stored in the image store, and its outcome (the PreviewImage row) is
written here at once, atomically, one small file per obsid. Tables commit in batches; a run
killed between a download and the next commit leaves the outcome here, and the rerun folds it
into the tables instead of fetching the preview again. Entries carry the digest of the preview
configuration: an entry made under another configuration (image size, policy...) is discarded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from pydantic import ValidationError

from schemas.records import PreviewImage
from storage.fs import atomic_write_text, join, open_fs

log = logging.getLogger(__name__)

JOURNAL_DIR = "ingest-journal"


class PreviewJournal:
    def __init__(self, state_root: str, config_digest: str):
        self.root = join(state_root, JOURNAL_DIR, "previews")
        self.config_digest = config_digest

    def _path(self, obsid: str) -> str:
        return join(self.root, f"{obsid}.json")

    def record(self, row: PreviewImage) -> None:
        payload = {"config": self.config_digest, "row": row.model_dump(mode="json")}
        atomic_write_text(self._path(row.obsid), json.dumps(payload, sort_keys=True))

    def load(self) -> dict[str, PreviewImage]:
        """Outcomes recorded under this configuration; stale or unreadable entries are removed."""
        fs, path = open_fs(self.root)
        if not fs.exists(path):
            return {}
        rows: dict[str, PreviewImage] = {}
        stale: list[str] = []
        for found in fs.find(path):
            leaf = found.rsplit("/", 1)[-1]
            if not leaf.endswith(".json"):
                continue  # a temporary left by a killed writer: gc removes it
            try:
                payload = json.loads(fs.cat_file(found))
                if payload.get("config") != self.config_digest:
                    stale.append(found)
                    continue
                row = PreviewImage.model_validate(payload["row"])
            except (ValueError, KeyError, ValidationError) as err:
                log.warning("discarding unreadable journal entry %s: %s", found, err)
                stale.append(found)
                continue
            rows[row.obsid] = row
        for found in stale:
            fs.rm(found)
        return rows

    def load_some(self, obsids: Iterable[str]) -> dict[str, PreviewImage]:
        """Outcomes already recorded for these obsids (a retried batch skips them)."""
        rows: dict[str, PreviewImage] = {}
        for obsid in obsids:
            fs, path = open_fs(self._path(obsid))
            if not fs.exists(path):
                continue
            try:
                payload = json.loads(fs.cat_file(path))
                if payload.get("config") == self.config_digest:
                    rows[obsid] = PreviewImage.model_validate(payload["row"])
            except (ValueError, KeyError, ValidationError):
                continue
        return rows

    def clear(self, obsids: Iterable[str]) -> None:
        fs, _ = open_fs(self.root)
        for obsid in obsids:
            _, path = open_fs(self._path(obsid))
            if fs.exists(path):
                fs.rm(path)
