"""Replay recorded MAST answers (a directory named as astroquery names its test fixtures).

    advSearch.json      answers Mast.Caom.Filtered: the query's filters are applied to the recorded
                        rows (a filter on a column the recording lacks is not applied) and paging is
                        computed over the filtered rows
    products.json       answers Mast.Caom.Products (rows of the asked obsids)
    countsResp.json     answers COUNT_BIG(*) counts, as recorded
    columnsconfig.json  the Mast.Caom.Cone column config

Recorded `mast:` URIs download as small stand-in files (a JPEG or a one-block FITS). Proposal
documents named `<id>.apt`, `<id>_phase2.apt`, `<id>.pro` or `catalog.txt`, in the directory or in a
sibling `proposals/` (the layout of ../shared/fixtures), are served too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.errors import InputError
from tasks.archive.columns import COLUMN_CONFIGS
from tasks.archive.content import ArchiveContent, stub_jpeg
from tasks.archive.documents import fits_stub

RECORDINGS = ("advSearch.json", "products.json", "countsResp.json", "columnsconfig.json")


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(f"recorded answer {path} is not valid JSON: {err}") from None


def _answer(path: Path) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    answer = _load(path)
    if not isinstance(answer, dict) or not isinstance(answer.get("fields"), list) or not isinstance(answer.get("data"), list):
        raise InputError(f"recorded answer {path} has no 'fields' and 'data' lists")
    return answer["fields"], answer["data"]


def load_replay_content(replay_dir: str | Path) -> ArchiveContent:
    root = Path(replay_dir).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"replay directory {root} does not exist")
    documents = any(root.glob("*.apt")) or any(root.glob("*.pro")) or (root / "catalog.txt").is_file()
    if not documents and not any((root / name).is_file() for name in RECORDINGS):
        raise InputError(f"replay directory {root} holds none of {', '.join(RECORDINGS)} (nor proposal documents)")
    obs_fields, obs_rows = _answer(root / "advSearch.json") if (root / "advSearch.json").is_file() else ([], [])
    product_fields, product_rows = _answer(root / "products.json") if (root / "products.json").is_file() else ([], [])
    counts = _load(root / "countsResp.json") if (root / "countsResp.json").is_file() else None
    configs = dict(COLUMN_CONFIGS)
    if (root / "columnsconfig.json").is_file():
        recorded = _load(root / "columnsconfig.json")
        if not isinstance(recorded, dict):
            raise InputError(f"{root / 'columnsconfig.json'} is not a JSON object")
        configs["Mast.Caom.Cone"] = configs["Mast.Caom.Filtered"] = recorded

    uris = {str(r.get("dataURI")) for r in product_rows}
    uris |= {str(r.get(k)) for r in obs_rows for k in ("jpegURL", "dataURL")}
    known = {u for u in uris if u.startswith("mast:")}
    jpeg = stub_jpeg()

    def resolve(uri: str) -> bytes | None:
        if uri not in known:
            return None
        name = uri.rsplit("/", 1)[-1]
        return jpeg if name.lower().endswith((".jpg", ".jpeg")) else fits_stub(name.split("_")[0], name)

    return ArchiveContent(
        label=f"replay {root}", obs_fields=obs_fields, obs_rows=obs_rows, product_fields=product_fields,
        product_rows=product_rows, column_configs=configs, count_answer=counts, file_resolver=resolve,
        document_dirs=(root, root.parent / "proposals"),
        document_names={"apt": ("{id}.apt", "{id}_phase2.apt"), "pro": ("{id}.pro", "{id}_phase2.pro"),
                        "catalog": ("catalog.txt",)})
