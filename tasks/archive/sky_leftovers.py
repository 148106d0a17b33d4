"""What a killed generate_sky or extend_sky leaves in a sky directory, and how the next call settles it.

generate_sky --overwrite swaps skies by renaming the old one aside, the new one in, then deleting
the aside copy: a kill in between leaves the old sky aside (put back) or a stale copy (deleted).

extend_sky writes its index files one by one, sky.json last. sky.json's `state` (next_proposal_id,
next_obsid) is the record of what the sky holds: anything at or past those ids belongs to an
extension that never finished, and is dropped before the next extension appends, so that a rerun
gives exactly the sky an uninterrupted run gives, whatever options the killed run had.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from storage.fs import TMP_PREFIX
from tasks.archive.documents import CATALOG_RULE

_RULE_LINE = re.compile(rb"^" + re.escape(CATALOG_RULE.encode()) + rb"\n", re.MULTILINE)
_CATALOG_ID = re.compile(rb"^ID:\s+(\d+)\s*$", re.MULTILINE)
CATALOG_CLOSING = (CATALOG_RULE + "\n").encode()


# ---------------------------------------------------------------- generate_sky --overwrite


def aside_dir(out: Path) -> Path:
    """Where generate_sky moves the sky it replaces until the new one is in place."""
    return out.parent / f".{out.name}.old"


def settle_aside(out: Path) -> None:
    """Finish a swap a kill interrupted: the new sky in place -> delete the old copy; `out` gone (the kill
    fell between the two renames) -> the old sky goes back, as if the overwrite had never started."""
    aside = aside_dir(out)
    if not aside.exists():
        return
    if (out / "sky.json").is_file():
        shutil.rmtree(aside)
    elif not out.exists() or (out.is_dir() and not any(out.iterdir())):
        os.replace(aside, out)


def swap_in(staging: Path, out: Path) -> None:
    """Rename `staging` to `out`; an existing sky at `out` stays whole (aside) until the new one is there."""
    if out.exists():
        if any(out.iterdir()):
            os.replace(out, aside_dir(out))
        else:
            out.rmdir()
    os.replace(staging, out)
    shutil.rmtree(aside_dir(out), ignore_errors=True)  # a partial delete is finished by the next call


# ---------------------------------------------------------------- extend_sky


def remove_unrecorded_files(root: Path, next_proposal_id: int) -> None:
    """Previews and documents of proposals sky.json does not record, and atomic writes' temporaries."""
    for folder in (root / "files").glob("*"):
        if folder.is_dir() and _id_at_or_past(folder.name, next_proposal_id):
            shutil.rmtree(folder)
    for kind in ("apt", "pro"):
        for path in (root / "stsci" / kind).glob(f"*.{kind}"):
            if _id_at_or_past(path.stem, next_proposal_id):
                path.unlink()
    for folder in (root, root / "caom", root / "stsci"):
        for path in folder.glob(f"{TMP_PREFIX}*"):
            if path.is_file():
                path.unlink()


def recorded_tables(observations: list[dict[str, Any]], products: list[dict[str, Any]], files: dict[str, str],
                    next_obsid: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """CAOM rows and file entries of the observations sky.json records (obsid < next_obsid)."""
    kept_rows = [row for row in observations if row["obsid"] < next_obsid]
    kept_products = [row for row in products if row["obsID"] < next_obsid]
    uris = {row["dataURI"] for row in kept_products}
    # Every file entry belongs to a product row; whichever index files the killed run got to write,
    # entries of products that are not kept are the killed run's.
    return kept_rows, kept_products, {uri: path for uri, path in files.items() if uri in uris}


def recorded_truth(truth: dict[str, Any], next_proposal_id: int, next_obsid: int) -> dict[str, Any]:
    truth["proposals"] = {pid: entry for pid, entry in truth["proposals"].items() if int(pid) < next_proposal_id}
    truth["observations"] = {obsid: entry for obsid, entry in truth["observations"].items()
                             if int(obsid) < next_obsid}
    return truth


def recorded_catalog_body(catalog: bytes, next_proposal_id: int) -> bytes:
    """catalog.txt without its closing rule and without records of proposals past next_proposal_id."""
    body = catalog[: -len(CATALOG_CLOSING)] if catalog.endswith(CATALOG_CLOSING) else catalog
    starts = [match.start() for match in _RULE_LINE.finditer(body)]
    if not starts:
        return body
    # Each record runs from its rule line to the next one (its trailing blank separator included).
    records = [body[a:b] for a, b in zip(starts, [*starts[1:], len(body)], strict=True)]
    kept = [record for record in records if not _record_past(record, next_proposal_id)]
    return body[: starts[0]] + b"".join(kept)


def _record_past(record: bytes, next_proposal_id: int) -> bool:
    match = _CATALOG_ID.search(record)
    return bool(match) and int(match.group(1)) >= next_proposal_id


def _id_at_or_past(name: str, next_id: int) -> bool:
    return name.isdigit() and int(name) >= next_id
