"""Options shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer

DataOption = Annotated[
    str | None,
    typer.Option("--data", help="Data root (local path or fsspec URL); default $HUBBLECLIP_DATA or ./data"),
]
MastUrlOption = Annotated[
    str | None,
    typer.Option("--mast-url", help="MAST server; default $HUBBLECLIP_MAST_URL or https://mast.stsci.edu"),
]
