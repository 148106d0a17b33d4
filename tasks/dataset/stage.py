"""The build_dataset stage: input tables -> an immutable, verified dataset version.

`run_build_dataset(params)` is plain Python (no Prefect): it reads the four input manifests,
names the version by their digests and the config, returns at once if that version exists,
and otherwise joins, splits, reads each image once, and streams the shards.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from schemas.arrow import QUARANTINE_SCHEMA
from schemas.dataset import DATASET_FORMAT, EXAMPLE_SCHEMA, SPLITS, BuildDatasetParams, Example, ExampleMeta
from schemas.errors import InputError
from schemas.manifest import FileEntry, Manifest
from schemas.records import QuarantineRecord
from schemas.stage import StageResult
from storage import DataLayout, ImageStore, TableStore
from storage.fs import exists, join
from storage.tables import table_from_records
from tasks.dataset.examples import INPUT_TABLES, STAGE, plan_examples
from tasks.dataset.shards import ShardFile, SplitShardWriter, check_jpeg
from tasks.dataset.versions import (
    MANIFEST_NAME,
    compute_version,
    manifest_url,
    read_manifest,
    set_latest,
    version_url,
    write_manifest,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_READ_THREADS = 4
_READ_WINDOW = 64


def input_digests(tables: TableStore, params: BuildDatasetParams) -> dict[str, str]:
    """name -> manifest digest of each input table; a missing required table is an InputError."""
    digests = {}
    for name in INPUT_TABLES:
        manifest = tables.manifest(name)
        if manifest is None:
            if name == "summaries" and not params.require_summary:
                digests[name] = ""
                continue
            raise InputError(f"table {name!r} does not exist under {tables.root}: run the stage that writes it"
                             + (" (or pass require_summary=False)" if name == "summaries" else ""))
        digests[name] = manifest.digest
    return digests


def plan_version(params: BuildDatasetParams) -> tuple[str, dict[str, str]]:
    """(version id, input digests) for these params, without building anything."""
    tables = TableStore(DataLayout(params.data).tables)
    inputs = input_digests(tables, params)
    return compute_version(inputs, params.version_config()), inputs


def complete_manifest(data: str, version: str) -> Manifest | None:
    """The manifest of a complete, intact version directory, or None (absent, interrupted, damaged)."""
    try:
        manifest = read_manifest(data, version)
    except InputError as err:
        log.warning("dataset %s has a bad manifest, rebuilding: %s", version, err)
        return None
    if manifest is None:
        return None
    if not all(exists(join(version_url(data, version), f.path)) for f in manifest.files):
        log.warning("dataset %s lists shards that are gone, rebuilding", version)
        return None
    return manifest


def _result(data: str, version: str, manifest: Manifest, cached: bool) -> StageResult:
    stats = {k: v for k, v in manifest.stats.items() if k != "row_groups"}
    return StageResult(stage=STAGE, digest=version, cached=cached, stats=stats,
                       outputs={"dataset": version_url(data, version), "manifest": manifest_url(data, version)})


def _read_ahead(items: Iterable[ExampleMeta], load: Callable[[ExampleMeta], Any],
                threads: int) -> Iterator[tuple[ExampleMeta, Any]]:
    """Apply `load` in a few threads (JPEG decoding and file reads release the GIL), in order,
    with at most _READ_WINDOW results pending so memory stays bounded."""
    pending: deque[tuple[ExampleMeta, Future]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dataset-read") as pool:
        for item in items:
            pending.append((item, pool.submit(load, item)))
            if len(pending) >= _READ_WINDOW:
                meta, future = pending.popleft()
                yield meta, future.result()
        while pending:
            meta, future = pending.popleft()
            yield meta, future.result()


def _word_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    return {"min": ordered[0], "mean": round(statistics.fmean(ordered), 2), "median": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], "max": ordered[-1]}


def run_build_dataset(params: BuildDatasetParams, progress: Progress | None = None,
                      read_threads: int = _READ_THREADS) -> StageResult:
    """Build (or find) the dataset version for these inputs and params. Its digest is the version id."""
    layout = DataLayout(params.data)
    tables = TableStore(layout.tables)
    version, inputs = plan_version(params)
    existing = None if params.rebuild else complete_manifest(params.data, version)
    if existing is not None:
        log.info("dataset %s already built from these inputs: nothing to do", version)
        if params.set_latest:
            set_latest(params.data, version)
        return _result(params.data, version, existing, cached=True)

    started = time.perf_counter()
    plan = plan_examples({name: tables.read(name) if inputs[name] else None for name in INPUT_TABLES}, params)
    images = ImageStore(layout.images)
    rejects: list[QuarantineRecord] = list(plan.rejects)

    def load(meta: ExampleMeta) -> bytes | tuple[str, str]:
        try:
            data = images.get(meta.image_sha256, verify=True)
        except InputError as err:
            return ("missing_image" if not images.has(meta.image_sha256) else "corrupt_image", str(err))
        if params.verify_images:
            problem = check_jpeg(data, params.image_size)
            if problem is not None:
                return problem
        return data

    root = version_url(params.data, version)
    writers = {s: SplitShardWriter(root, s, target_bytes=int(params.shard_target_mb * 1024 * 1024),
                                   row_group_rows=params.row_group_rows,
                                   compression_level=params.compression_level) for s in SPLITS}
    counts: Counter[str] = Counter()
    proposals: dict[str, set[str]] = {s: set() for s in SPLITS}
    words: dict[str, list[int]] = {"caption_summary": [], "caption_abstract": []}
    total = len(plan.examples)
    try:
        for done, (meta, loaded) in enumerate(_read_ahead(plan.examples, load, read_threads), start=1):
            if isinstance(loaded, tuple):
                reason, detail = loaded
                rejects.append(QuarantineRecord(record_id=meta.obsid, stage=STAGE, reason=reason,
                                                detail=f"image {meta.image_sha256[:12]}: {detail}"[:2000]))
            else:
                example = Example.model_construct(**dict(meta), image=loaded)  # meta is validated already
                writers[meta.split].add(example)
                counts[meta.split] += 1
                proposals[meta.split].add(meta.proposal_id)
                words["caption_abstract"].append(len(meta.caption_abstract.split()))
                if meta.caption_summary:
                    words["caption_summary"].append(len(meta.caption_summary.split()))
            if progress is not None:
                progress(done, total)
        shards: list[ShardFile] = [f for s in SPLITS for f in writers[s].close()]
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise

    reasons = Counter(r.reason for r in rejects)
    if rejects:
        tables.append("quarantine", table_from_records(rejects, QUARANTINE_SCHEMA),
                      unique_on=("record_id", "stage", "reason"))  # a rebuild after a kill adds none twice
        log.warning("build_dataset %s: %d records quarantined: %s", version, len(rejects), dict(reasons))
    if not shards:
        raise InputError(f"no usable examples: {plan.stats.get('examples_planned', 0)} planned, "
                         f"{len(rejects)} quarantined ({dict(reasons)}); see the quarantine table")

    elapsed = time.perf_counter() - started
    written = sum(counts.values())
    stats: dict[str, Any] = {
        "version": version,
        "examples": dict(counts) | {"total": written},
        "proposals": {s: len(p) for s, p in proposals.items()},
        "quarantined": dict(reasons) | {"total": len(rejects)},
        "observations_without_image": plan.stats.get("observations_without_image", 0),
        "summaries_from_older_abstract": plan.stats.get("summaries_from_older_abstract", 0),
        "caption_words": {k: _word_stats(v) for k, v in words.items()},
        "abstract_captions_over_77_words": sum(1 for n in words["caption_abstract"] if n > 77),
        "shards": len(shards),
        "bytes": sum(f.bytes for f in shards),
        "build_seconds": round(elapsed, 2),
        "images_per_second": round(written / elapsed, 1) if elapsed > 0 else None,
        "row_groups": {f.path: list(f.row_groups) for f in shards},
    }
    manifest = Manifest(
        name=MANIFEST_NAME, schema_version=DATASET_FORMAT, arrow_schema=EXAMPLE_SCHEMA.remove_metadata().to_string(),
        files=[FileEntry(path=f.path, rows=f.rows, bytes=f.bytes, sha256=f.sha256, partition=f.split) for f in shards],
        inputs=inputs, config=params.version_config(), stats=stats,
    )
    write_manifest(params.data, version, manifest)  # last: the version exists from here on
    if params.set_latest:
        set_latest(params.data, version)
    log.info("dataset %s: %s examples (%s), %d quarantined, %.1f s", version, written, dict(counts),
             len(rejects), elapsed)
    return _result(params.data, version, manifest, cached=False)
