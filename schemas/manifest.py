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
    def from_json(cls, content: str | bytes, source: str = "") -> Manifest:
        """Parse a stored manifest; any damage is an InputError naming `source` (its path)."""
        from pydantic import ValidationError

        from schemas.errors import InputError, validation_reasons

        where = f"manifest {source}" if source else "manifest"
        try:
            data = json.loads(content)  # bytes too: a UnicodeDecodeError is a ValueError
        except ValueError as err:
            raise InputError(f"{where} is unreadable, not valid JSON ({err}): truncated or corrupted") from None
        if not isinstance(data, dict):
            raise InputError(f"{where} is unreadable: it holds a JSON {type(data).__name__}, not an object")
        claimed = data.pop("digest", None)
        data.pop("rows", None)
        try:
            manifest = cls.model_validate(data)
        except ValidationError as err:
            raise InputError(f"{where} is unreadable, not a valid manifest ({validation_reasons(err)})") from None
        if claimed is not None and claimed != manifest.digest:
            raise InputError(
                f"{where} ({manifest.name!r}) claims digest {claimed[:12]} but its content hashes to "
                f"{manifest.digest[:12]}: it was edited or corrupted"
            )
        return manifest
