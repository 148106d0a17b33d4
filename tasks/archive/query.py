"""Mast.Caom.Filtered semantics over in-memory rows: filters, columns, counts and paging.

Filters arrive as astroquery sends them (mast-access.md 1.2): discrete `values` (strings; matched
case-insensitively against the row's value as text), continuous `[{"min": a, "max": b}]` ranges
(inclusive), and an optional `freeText` SQL-LIKE pattern (`%` and `_`). A filter on a column the
column config does not know is an error, as on MAST; a filter on a known column that the rows do not
carry (a recording made before the column existed) is skipped, so the recording stands as the answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any


class QueryError(ValueError):
    """A request MAST would answer with status ERROR; the message is MAST's `msg`."""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def _like(pattern: str) -> re.Pattern[str]:
    parts = (".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.compile("^" + "".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _number(value: Any, column: str, bound: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise QueryError(f"Invalid {bound} value {value!r} for column {column}") from None
    if math.isnan(number):
        raise QueryError(f"Invalid {bound} value NaN for column {column}")
    return number


class _Predicate:
    def __init__(self, column: str, spec: dict[str, Any]):
        self.column = column
        values = spec.get("values", [])
        if not isinstance(values, list):
            raise QueryError(f"Filter values for {column} must be a list")
        self.ranges: list[tuple[float | None, float | None]] = []
        self.discrete: set[str] = set()
        for value in values:
            if isinstance(value, dict):
                if not ({"min", "max"} & value.keys()):
                    raise QueryError(f"Range filter on {column} needs min and/or max")
                self.ranges.append((_number(value.get("min"), column, "min"), _number(value.get("max"), column, "max")))
            elif isinstance(value, (str, int, float, bool)):
                self.discrete.add(_text(value).lower())
            else:
                raise QueryError(f"Unsupported filter value {value!r} for column {column}")
        free = spec.get("freeText")
        if free is not None and not isinstance(free, str):
            raise QueryError(f"freeText for {column} must be a string")
        self.free = _like(free) if free else None

    def __call__(self, row: dict[str, Any]) -> bool:
        value = row.get(self.column)
        if self.ranges:
            if value is None or isinstance(value, bool):
                return False
            try:
                number = float(value)
            except (TypeError, ValueError):
                return False
            for low, high in self.ranges:
                if (low is None or number >= low) and (high is None or number <= high):
                    return True
        if self.discrete and _text(value).lower() in self.discrete:
            return True
        if self.free is not None and self.free.match(_text(value)):
            return True
        return False


def build_predicates(filters: Any, known_columns: Iterable[str], row_columns: set[str]) -> list[_Predicate]:
    """Validate `filters` against the column config; drop those on columns the rows lack."""
    if filters is None:
        return []
    if not isinstance(filters, list):
        raise QueryError("params.filters must be a list")
    by_lower = {name.lower(): name for name in known_columns}
    rows_lower = {name.lower(): name for name in row_columns}
    predicates = []
    for spec in filters:
        if not isinstance(spec, dict) or not isinstance(spec.get("paramName"), str):
            raise QueryError("Each filter needs a paramName and values")
        name = spec["paramName"]
        if name.lower() not in by_lower:
            raise QueryError(f"Unknown filter: {name} is not a column of this service")
        if name.lower() not in rows_lower:
            continue  # a known column the rows do not carry: not applied (replay semantics)
        predicates.append(_Predicate(rows_lower[name.lower()], spec))
    return predicates


def select_columns(fields: list[dict[str, str]], columns: Any) -> list[dict[str, str]]:
    """`*` (or nothing) keeps every field; otherwise a comma-separated list of known names."""
    if columns in (None, "", "*"):
        return fields
    if not isinstance(columns, str):
        raise QueryError("params.columns must be a string")
    by_lower = {f["name"].lower(): f for f in fields}
    chosen = []
    for name in (c.strip() for c in columns.split(",")):
        if name.lower() not in by_lower:
            raise QueryError(f"Invalid column name: {name}")
        chosen.append(by_lower[name.lower()])
    return chosen


def page_numbers(request: dict[str, Any], default_pagesize: int = 50000) -> tuple[int, int]:
    try:
        pagesize = int(default_pagesize if request.get("pagesize") is None else request["pagesize"])
        page = int(1 if request.get("page") is None else request["page"])
    except (TypeError, ValueError):
        raise QueryError("pagesize and page must be integers") from None
    if pagesize < 1 or page < 1:
        raise QueryError("pagesize and page must be positive")
    return min(pagesize, 500_000), page


def paging(page: int, pagesize: int, rows_filtered: int, rows_on_page: int) -> dict[str, int]:
    return {"page": page, "pageSize": pagesize, "pagesFiltered": math.ceil(rows_filtered / pagesize),
            "rows": rows_on_page, "rowsFiltered": rows_filtered, "rowsTotal": rows_filtered}


def count_answer(count: int) -> dict[str, Any]:
    """What MAST answers to `columns: COUNT_BIG(*)` (countsResp.json's shape)."""
    return {"status": "COMPLETE", "msg": "", "data": [{"Column1": count}],
            "fields": [{"name": "Column1", "type": "string"}], "paging": paging(1, 50000, 1, 1)}


def error_answer(message: str) -> dict[str, Any]:
    return {"status": "ERROR", "msg": message, "data": [], "fields": []}
