"""What a data root holds, in a form two runs can be compared by: digests, and rows without clocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from storage import DataLayout, TableStore

STAGES = ("ingest", "summarize", "dataset", "train", "evaluate")
# Stage outputs: a pure function of their inputs, so compared by manifest digest (file hashes).
CONTENT_TABLES = ("observations", "proposals", "previews", "summaries")
# Logs: rows carry the time they were written, so compared as rows without it.
LOG_TABLES = {"quarantine": ("record_id", "stage", "reason"), "summary_cache": ("cache_key",)}
# Row keys, to count records: one row per key in every content table.
ROW_KEYS = {"observations": ("obsid",), "proposals": ("proposal_id",), "previews": ("obsid",),
            "summaries": ("proposal_id",), **LOG_TABLES}


def table_rows(root: Path, name: str) -> list[dict[str, Any]]:
    rows = TableStore(DataLayout(str(root)).tables).read_rows(name)
    for row in rows:
        row.pop("created_at", None)
    return rows


def _sorted_rows(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


def final_state(root: Path) -> dict[str, Any]:
    """Every stage's output under `root`, comparable across runs."""
    layout = DataLayout(str(root))
    tables = TableStore(layout.tables)
    state: dict[str, Any] = {}
    for name in CONTENT_TABLES:
        manifest = tables.manifest(name)
        state[f"table:{name}"] = manifest.digest if manifest else None
    for name in LOG_TABLES:
        state[f"log:{name}"] = _sorted_rows(table_rows(root, name))
    watermark = Path(layout.state) / "ingest-watermark.json"
    state["watermark"] = json.loads(watermark.read_text())["t_obs_release"] if watermark.is_file() else None

    datasets = Path(layout.datasets)
    if (datasets / "latest").is_file():
        from tasks.dataset.versions import read_manifest

        version = (datasets / "latest").read_text().strip()
        state["dataset"] = (version, read_manifest(str(root), version).digest)
    else:
        state["dataset"] = None
    from schemas.manifest import Manifest

    for kind, pattern in (("run", "runs/*/manifest.json"), ("report", "reports/*/manifest.json")):
        state[kind] = sorted((p.parent.name, Manifest.from_json(p.read_text()).digest) for p in root.glob(pattern))
    index = TableStore(layout.index)
    state["index"] = sorted((name, index.manifest(name).digest) for name in index.names())
    return state


def record_keys(root: Path) -> set[tuple]:
    """(table, key...) of every row of the tables: what a run must never lose."""
    keys: set[tuple] = set()
    for name, columns in ROW_KEYS.items():
        for row in table_rows(root, name):
            keys.add((name, *(row[c] for c in columns)))
    return keys


def duplicate_rows(root: Path) -> dict[str, int]:
    """Rows whose key appears more than once, per table (a replayed commit would add them)."""
    out = {}
    for name, columns in ROW_KEYS.items():
        rows = table_rows(root, name)
        keys = [tuple(r[c] for c in columns) for r in rows]
        if len(keys) != len(set(keys)):
            out[name] = len(keys) - len(set(keys))
    return out


def state_diff(got: dict[str, Any], want: dict[str, Any]) -> str:
    """A readable account of how two final states differ (for assertion messages)."""
    lines = []
    for key in sorted(set(got) | set(want)):
        a, b = got.get(key), want.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            extra, missing = sorted(set(map(str, a)) - set(map(str, b))), sorted(set(map(str, b)) - set(map(str, a)))
            lines.append(f"{key}: {len(extra)} unexpected, {len(missing)} missing")
            lines += [f"  + {row[:300]}" for row in extra[:5]] + [f"  - {row[:300]}" for row in missing[:5]]
        else:
            lines.append(f"{key}: {a!r} != {b!r}")
    return "\n".join(lines)
