"""Versioned data roots: rebuild from scratch while the current version stays readable.

Layout under a data parent `<data>`:

    <data>/current                   one line: the id of the version readers use
    <data>/versions/<id>/            a complete data root (tables/, images/, datasets/, runs/, ...)
    <data>/versions/<id>/_COMPLETE.json   written when the version's pipeline finished

A rebuild writes a new `versions/<id>/` from nothing (so every cache starts cold) while readers
keep resolving `current` to the old id; only after the new version's pipeline completes is
`_COMPLETE.json` written and then `current` replaced, atomically, in one small write. A rebuild
killed midway leaves `current` untouched and an incomplete version that `prune_versions` removes.

A data root that has never been rebuilt has no `current` file: it is used flat, as itself, so
`--data DIR` behaves the same for every stage until the first rebuild. After that, every command
finds the live root with `resolve_data_root(DIR)` (single-stage commands through
flows.commands.options.live_data_root).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime

from schemas.errors import InputError
from storage.fs import atomic_write_text, exists, join, open_fs, read_text

CURRENT = "current"
VERSIONS = "versions"
COMPLETE = "_COMPLETE.json"


def version_root(data: str, version: str) -> str:
    if not version or "/" in version or version.startswith("."):
        raise InputError(f"invalid data version id {version!r}")
    return join(data, VERSIONS, version)


def current_version(data: str) -> str | None:
    """The id `current` names, or None for a flat (never rebuilt) data root."""
    pointer = join(data, CURRENT)
    if not exists(pointer):
        return None
    version = read_text(pointer).strip()
    if not exists(join(version_root(data, version), COMPLETE)):
        raise InputError(f"{pointer} names version {version!r}, which is not a complete data version")
    return version


def resolve_data_root(data: str) -> str:
    """The live data root: `<data>/versions/<current>` once rebuilt, else `<data>` itself."""
    version = current_version(data)
    return data if version is None else version_root(data, version)


def new_version_id() -> str:
    """Sortable and unique: UTC time plus a random suffix (two rebuilds in one second differ)."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def publish_version(data: str, version: str, summary: dict | None = None) -> None:
    """Mark `version` complete, then point `current` at it (the switch is one atomic write)."""
    root = version_root(data, version)
    if not exists(root):
        raise InputError(f"data version {version!r} does not exist under {data}")
    record = {"version": version, "completed_at": datetime.now(UTC).isoformat(), **(summary or {})}
    atomic_write_text(join(root, COMPLETE), json.dumps(record, indent=2, sort_keys=True, default=str))
    atomic_write_text(join(data, CURRENT), version + "\n")


def list_versions(data: str) -> list[dict]:
    """Every version directory, oldest first, with whether it is complete and current."""
    fs, path = open_fs(join(data, VERSIONS))
    if not fs.exists(path):
        return []
    live = None
    if exists(join(data, CURRENT)):
        live = read_text(join(data, CURRENT)).strip()
    out = []
    for entry in sorted(fs.ls(path, detail=False)):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        out.append({"version": name, "complete": exists(join(data, VERSIONS, name, COMPLETE)),
                    "current": name == live})
    return out


def prune_versions(data: str, keep: int) -> list[str]:
    """Delete versions beyond the `keep` newest complete ones, and incomplete ones older than
    the current version (a killed rebuild). The current version is never deleted."""
    if keep < 1:
        raise InputError(f"keep must be >= 1, got {keep}")
    versions = list_versions(data)
    live = next((v["version"] for v in versions if v["current"]), None)
    complete = [v["version"] for v in versions if v["complete"]]
    doomed = set(complete[:-keep]) if len(complete) > keep else set()
    if live is not None:
        doomed |= {v["version"] for v in versions if not v["complete"] and v["version"] < live}
    doomed.discard(live)
    fs, _ = open_fs(data)
    for version in sorted(doomed):
        _, path = open_fs(version_root(data, version))
        fs.rm(path, recursive=True)
    return sorted(doomed)
