"""Options shared by several commands."""

from __future__ import annotations

from typing import Annotated

import typer


def live_data_root(data: str | None, *, must_exist: bool = False) -> str:
    """The root a single-stage command reads and writes: `--data` (or its default) itself, or,
    once `hubbleclip rebuild` has published a version there, that version (`<data>/current`).

    must_exist: for commands that only read or clean up, where a mistyped --data would otherwise
    look like an empty root ("no dataset versions", "removed 0") and exit 0.
    """
    from flows.versions import resolve_data_root
    from schemas.errors import InputError
    from schemas.settings import get_settings
    from storage.fs import open_fs

    given = get_settings(data=data).data
    if must_exist:
        fs, path = open_fs(given)
        if not fs.exists(path):
            raise InputError(f"no data root at {given} (from --data, $HUBBLECLIP_DATA or ./data)")
        if not fs.isdir(path):
            raise InputError(f"data root {given} is a file, not a directory")
    return resolve_data_root(given)


DataOption = Annotated[
    str | None,
    typer.Option("--data", help="Data root (local path or fsspec URL); default $HUBBLECLIP_DATA or ./data"),
]
MastUrlOption = Annotated[
    str | None,
    typer.Option("--mast-url", help="MAST server; default $HUBBLECLIP_MAST_URL or https://mast.stsci.edu"),
]
