"""Versioned data roots: rebuild from scratch while the current version stays readable.

Layout under a data parent `<data>`:

    <data>/current                   one line: the id of the version readers use
    <data>/versions/<id>/            a complete data root (tables/, images/, datasets/, runs/, ...)
    <data>/versions/<id>/_STARTED.json    written when its rebuild starts
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
STARTED = "_STARTED.json"


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


def start_version(data: str, version: str) -> str:
    """Create `version`'s root with its start time (ids need not sort by time: `--version` is free)."""
    root = version_root(data, version)
    if exists(root):
        raise InputError(f"data version {version!r} already exists under {data}; choose another id")
    atomic_write_text(join(root, STARTED), json.dumps({"version": version, "started_at": _now()}, indent=2))
    return root


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _recorded(data: str, version: str, marker: str, field: str) -> str | None:
    """`field` of a version's marker file; None when the file is absent, '' when it says nothing."""
    path = join(version_root(data, version), marker)
    if not exists(path):
        return None
    try:
        return str(json.loads(read_text(path)).get(field, ""))
    except ValueError:
        return ""


def publish_version(data: str, version: str, summary: dict | None = None) -> None:
    """Mark `version` complete, then point `current` at it (the switch is one atomic write)."""
    root = version_root(data, version)
    if not exists(root):
        raise InputError(f"data version {version!r} does not exist under {data}")
    record = {"version": version, "completed_at": _now(), **(summary or {})}
    atomic_write_text(join(root, COMPLETE), json.dumps(record, indent=2, sort_keys=True, default=str))
    atomic_write_text(join(data, CURRENT), version + "\n")


def list_versions(data: str) -> list[dict]:
    """Every version directory, oldest first (by start time; versions without one, from before
    start times were recorded, first by name), with whether it is complete and current."""
    fs, path = open_fs(join(data, VERSIONS))
    if not fs.exists(path):
        return []
    live = None
    if exists(join(data, CURRENT)):
        live = read_text(join(data, CURRENT)).strip()
    out = []
    for entry in fs.ls(path, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        completed_at = _recorded(data, name, COMPLETE, "completed_at")
        out.append({"version": name, "complete": completed_at is not None, "current": name == live,
                    "started_at": _recorded(data, name, STARTED, "started_at") or "",
                    "completed_at": completed_at or ""})
    return sorted(out, key=lambda v: (v["started_at"], v["version"]))


def prune_versions(data: str, keep: int) -> list[str]:
    """Delete complete versions beyond the `keep` newest (by completion time), and incomplete ones
    started before the current version was (a killed rebuild). The current version is never
    deleted, nor an incomplete one started after it (a rebuild that may still be running)."""
    if keep < 1:
        raise InputError(f"keep must be >= 1, got {keep}")
    versions = list_versions(data)
    live = next((v for v in versions if v["current"]), None)
    complete = sorted((v for v in versions if v["complete"]), key=lambda v: (v["completed_at"], v["version"]))
    doomed = {v["version"] for v in complete[:-keep]} if len(complete) > keep else set()
    if live is not None:
        started_before = versions[:versions.index(live)]  # `versions` is in start order
        doomed |= {v["version"] for v in started_before if not v["complete"]}
        doomed.discard(live["version"])
    fs, _ = open_fs(data)
    for version in sorted(doomed):
        _, path = open_fs(version_root(data, version))
        fs.rm(path, recursive=True)
    return sorted(doomed)
