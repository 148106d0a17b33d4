"""Explicit Arrow schemas for the stage tables, derived from the pydantic records.

An explicit schema (never one inferred from the first row) keeps every file of a table
identical in layout, so appends and upserts never drift.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel

from schemas.records import Observation, PreviewImage, Proposal, QuarantineRecord

_SCALARS: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _arrow_type(args[0])
    if origin is Literal:
        return pa.string()
    if origin is list:
        (inner,) = typing.get_args(annotation)
        return pa.list_(_arrow_type(inner))
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no Arrow type for {annotation!r}")


def arrow_schema_for(model: type[BaseModel]) -> pa.Schema:
    hints = typing.get_type_hints(model)
    return pa.schema([pa.field(name, _arrow_type(hints[name])) for name in model.model_fields])


OBSERVATIONS_SCHEMA = arrow_schema_for(Observation)
PREVIEWS_SCHEMA = arrow_schema_for(PreviewImage)
PROPOSALS_SCHEMA = arrow_schema_for(Proposal)
QUARANTINE_SCHEMA = arrow_schema_for(QuarantineRecord)
