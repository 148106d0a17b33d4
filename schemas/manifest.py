"""The manifest: the contract one stage hands the next, and the cache key it uses.

A table is what its manifest lists, nothing else: files not listed (a writer killed midway)
are invisible. The manifest's `digest` covers the files' hashes, the schema and the config,
so an unchanged input gives an unchanged digest and a downstream stage can skip its work.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import utcnow

MANIFEST_FORMAT = 1


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="path relative to the table directory")
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str = Field(min_length=64, max_length=64)
    partition: str = ""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = MANIFEST_FORMAT
    name: str = Field(min_length=1, description="table or artefact name, e.g. 'observations'")
    schema_version: int = 1
    arrow_schema: str = Field(default="", description="pyarrow schema, as text")
    files: list[FileEntry] = Field(default_factory=list)
    inputs: dict[str, str] = Field(default_factory=dict, description="upstream name -> manifest digest")
    config: dict[str, Any] = Field(default_factory=dict)
    stats: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def digest(self) -> str:
        """Content hash: files, schema, inputs and config; not the time or the stats."""
        payload = {
            "name": self.name,
            "schema_version": self.schema_version,
            "arrow_schema": self.arrow_schema,
            "files": sorted((f.path, f.sha256, f.rows) for f in self.files),
            "inputs": self.inputs,
            "config": self.config,
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["digest"] = self.digest
        data["rows"] = self.rows
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        claimed = data.pop("digest", None)
        data.pop("rows", None)
        manifest = cls.model_validate(data)
        if claimed is not None and claimed != manifest.digest:
            from schemas.errors import InputError

            raise InputError(
                f"manifest {manifest.name!r} claims digest {claimed[:12]} but its content hashes to "
                f"{manifest.digest[:12]}: it was edited or corrupted"
            )
        return manifest
