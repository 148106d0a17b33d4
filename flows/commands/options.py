"""Options shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer


def live_data_root(data: str | None) -> str:
    """The root a single-stage command reads and writes: `--data` (or its default) itself, or,
    once `hubbleclip rebuild` has published a version there, that version (`<data>/current`)."""
    from flows.versions import resolve_data_root
    from schemas.settings import get_settings

    return resolve_data_root(get_settings(data=data).data)


DataOption = Annotated[
    str | None,
    typer.Option("--data", help="Data root (local path or fsspec URL); default $HUBBLECLIP_DATA or ./data"),
]
MastUrlOption = Annotated[
    str | None,
    typer.Option("--mast-url", help="MAST server; default $HUBBLECLIP_MAST_URL or https://mast.stsci.edu"),
]
