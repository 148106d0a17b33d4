"""What the archive serves, independent of HTTP: CAOM rows, products, files and STScI documents.

`ArchiveContent.invoke(request)` answers one `/api/v0/invoke` MashupRequest (Mast.Caom.Filtered,
with counts and paging, and Mast.Caom.Products) and returns the JSON bytes MAST would send. Answers
are cached per query (filters without the cacheBreaker) and per page, since astroquery re-sends
the identical query for every page.

Two sources build it: `load_sky_content(sky_dir)` (a generated sky, sky.py) and
`replay.load_replay_content(dir)` (recorded MAST answers).
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import InputError
from tasks.archive.columns import COLUMN_CONFIGS
from tasks.archive.documents import fits_stub
from tasks.archive.query import (
    QueryError,
    build_predicates,
    count_answer,
    error_answer,
    page_numbers,
    paging,
    select_columns,
)

FILTERED = "Mast.Caom.Filtered"
PRODUCTS = "Mast.Caom.Products"
_PROPOSAL_ID = re.compile(r"^\d{1,6}$")
_OBSID = re.compile(r"^\d{1,20}$")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


class _LRU:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key: Any) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def stub_jpeg() -> bytes:
    """A small valid JPEG for recorded preview URIs (replay has rows, not pixels)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (16, 16), 96).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@dataclass
class ArchiveContent:
    label: str
    obs_fields: list[dict[str, str]] = field(default_factory=list)
    obs_rows: list[dict[str, Any]] = field(default_factory=list)
    product_fields: list[dict[str, str]] = field(default_factory=list)
    product_rows: list[dict[str, Any]] = field(default_factory=list)
    column_configs: dict[str, Any] = field(default_factory=lambda: dict(COLUMN_CONFIGS))
    count_answer: dict[str, Any] | None = None  # a recorded countsResp.json, answered as recorded
    file_resolver: Callable[[str], bytes | None] = lambda uri: None
    document_dirs: tuple[Path, ...] = ()  # sky: <sky>/stsci ; replay: the directory and ../proposals
    document_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._queries = _LRU(256)
        self._pages = _LRU(2048)
        self._products_by_obsid: dict[str, list[dict[str, Any]]] = {}
        for row in self.product_rows:
            self._products_by_obsid.setdefault(str(row.get("obsID", "")), []).append(row)
        self._obs_columns = {f["name"] for f in self.obs_fields}
        self._filter_columns = set(self.column_configs.get("Mast.Caom.Cone", {})) | self._obs_columns

    # ------------------------------------------------------------ MAST invoke

    def invoke(self, request: Any) -> bytes:
        """One MashupRequest -> MAST's JSON answer (status COMPLETE or ERROR); never raises."""
        try:
            return self._invoke(request)
        except QueryError as err:
            return _dumps(error_answer(str(err)))

    def _invoke(self, request: Any) -> bytes:
        if not isinstance(request, dict):
            raise QueryError("Request must be a JSON object")
        service = request.get("service")
        params = request.get("params", {})
        if not isinstance(service, str) or not service:
            raise QueryError("Request has no service")
        if not isinstance(params, dict):
            raise QueryError("params must be a JSON object")
        if request.get("format", "json") not in ("json", None):
            raise QueryError(f"Unsupported format {request.get('format')!r}; this archive answers json only")
        if service == FILTERED:
            return self._filtered(request, params)
        if service == PRODUCTS:
            return self._products(request, params)
        raise QueryError(f"Unknown service: {service}")

    def _filtered(self, request: dict[str, Any], params: dict[str, Any]) -> bytes:
        columns = params.get("columns", "*")
        filters = params.get("filters", [])
        filter_key = json.dumps(filters, sort_keys=True, default=str)
        is_count = isinstance(columns, str) and columns.replace(" ", "").upper() == "COUNT_BIG(*)"
        if is_count and self.count_answer is not None:
            build_predicates(filters, self._filter_columns, self._obs_columns)  # still validate
            return _dumps(self.count_answer)
        rows = self._queries.get((FILTERED, filter_key))
        if rows is None:
            predicates = build_predicates(filters, self._filter_columns, self._obs_columns)
            rows = [r for r in self.obs_rows if all(p(r) for p in predicates)]
            self._queries.put((FILTERED, filter_key), rows)
        if is_count:
            return _dumps(count_answer(len(rows)))
        pagesize, page = page_numbers(request)
        key = (FILTERED, filter_key, str(columns), pagesize, page)
        cached = self._pages.get(key)
        if cached is not None:
            return cached
        fields = select_columns(self.obs_fields, columns)
        names = [f["name"] for f in fields]
        chunk = rows[(page - 1) * pagesize : page * pagesize]
        data = chunk if fields is self.obs_fields else [{n: r.get(n) for n in names} for r in chunk]
        answer = _dumps({"status": "COMPLETE", "msg": "", "data": data, "fields": fields,
                         "paging": paging(page, pagesize, len(rows), len(chunk))})
        self._pages.put(key, answer)
        return answer

    def _products(self, request: dict[str, Any], params: dict[str, Any]) -> bytes:
        raw = params.get("obsid")
        if raw is None or raw == "" or raw == []:
            raise QueryError("Mast.Caom.Products needs params.obsid (comma-separated obsid values)")
        ids = raw if isinstance(raw, list) else str(raw).split(",")
        ids = [str(i).strip() for i in ids]
        if not all(_OBSID.match(i) for i in ids):
            raise QueryError("Error converting data type varchar to bigint.")  # MAST's words for obs_id given as obsid
        pagesize, page = page_numbers(request)
        rows = [row for i in dict.fromkeys(ids) for row in self._products_by_obsid.get(i, [])]
        chunk = rows[(page - 1) * pagesize : page * pagesize]
        return _dumps({"status": "COMPLETE", "msg": "", "data": chunk, "fields": self.product_fields,
                       "paging": paging(page, pagesize, len(rows), len(chunk))})

    def columns_config(self, config_id: str) -> bytes | None:
        config = self.column_configs.get(config_id)
        return None if config is None else _dumps(config)

    # ------------------------------------------------------------ files and documents

    def file(self, uri: str) -> bytes | None:
        return self.file_resolver(uri)

    def document(self, kind: str, proposal_id: str | None = None) -> bytes | None:
        """kind: apt | pro | catalog. None when this archive does not hold the document."""
        if kind != "catalog" and (proposal_id is None or not _PROPOSAL_ID.match(proposal_id)):
            return None
        for directory in self.document_dirs:
            for pattern in self.document_names.get(kind, ()):
                path = directory / pattern.format(id=proposal_id)
                if path.is_file():
                    return path.read_bytes()
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path} is missing: not a sky directory (make one with `hubbleclip archive generate`)") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err}") from None


def load_sky_content(sky_dir: str | Path) -> ArchiveContent:
    root = Path(sky_dir).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"sky directory {root} does not exist")
    meta = _read_json(root / "sky.json")
    if not isinstance(meta, dict) or meta.get("format") != "hubbleclip-sky":
        raise InputError(f"{root / 'sky.json'} is not a hubbleclip sky")
    observations = _read_json(root / "caom" / "observations.json")
    products = _read_json(root / "caom" / "products.json")
    files: dict[str, str] = _read_json(root / "caom" / "files.json")
    configs = _read_json(root / "caom" / "columnsconfig.json")
    files_root = root.resolve()

    def resolve(uri: str) -> bytes | None:
        entry = files.get(uri)
        if entry is None:
            return None
        name = uri.rsplit("/", 1)[-1]
        if entry == "fits":
            return fits_stub(name.split("_")[0], name)
        path = (files_root / entry).resolve()
        if files_root not in path.parents or not path.is_file():
            return None
        return path.read_bytes()

    return ArchiveContent(
        label=f"sky {root}", obs_fields=observations["fields"], obs_rows=observations["data"],
        product_fields=products["fields"], product_rows=products["data"], column_configs=configs,
        file_resolver=resolve, document_dirs=(root / "stsci",),
        document_names={"apt": ("apt/{id}.apt",), "pro": ("pro/{id}.pro",), "catalog": ("catalog.txt",)})
