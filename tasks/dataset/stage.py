"""The build_dataset stage: input tables -> an immutable, verified dataset version.

`run_build_dataset(params)` is plain Python (no Prefect): it reads the four input manifests,
names the version by their digests and the config, returns at once if that version exists,
and otherwise joins, splits, reads each image once, and writes the shards.

It is three steps, so the Prefect flow (flows/build_dataset.py) can run the middle one on many
workers (a Dask cluster) and still write the same bytes:

- `plan_build`: join and split (metadata only), then cut each split into shard-sized chunks by the
  stored JPEGs' sizes (a stat, not a read) at row-group boundaries. The chunks depend on the inputs
  and params only, never on the task runner.
- `build_shard`: one chunk -> one shard `<split>/part-<chunk>.parquet`, written atomically, plus its
  quarantine records, as JSON-safe data (it can cross machines).
- `finish_build`: quarantine rows, the manifest (last: the version exists from then on), `latest`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
from tasks.dataset.examples import INPUT_TABLES, STAGE, ExamplePlan, plan_examples
from tasks.dataset.shards import (
    ShardFile,
    SplitShardWriter,
    check_jpeg,
    object_sizes,
    shard_from_json,
    shard_to_json,
)
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


PlannedVersion = tuple[str, dict[str, str]]  # (version id, input table name -> manifest digest)


def plan_version(params: BuildDatasetParams) -> PlannedVersion:
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


# -- plan: examples and shard-sized chunks ---------------------------------------------------------

@dataclass(frozen=True)
class ShardChunk:
    """The examples of one shard to be: part `part` of split `split`, in shard order."""

    split: str
    part: int
    examples: tuple[ExampleMeta, ...]

    def payload(self) -> dict[str, Any]:
        """JSON-safe, for a task on another machine."""
        return {"split": self.split, "part": self.part,
                "examples": [m.model_dump(mode="json") for m in self.examples]}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ShardChunk:
        return cls(split=data["split"], part=int(data["part"]),
                   examples=tuple(ExampleMeta.model_validate(m) for m in data["examples"]))


@dataclass
class BuildPlan:
    params: BuildDatasetParams
    version: str
    inputs: dict[str, str]
    examples: ExamplePlan
    chunks: list[ShardChunk] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


def built_version(params: BuildDatasetParams, planned: PlannedVersion | None = None) -> StageResult | None:
    """The complete version these params name (and `latest` moved to it), or None to build it.

    `planned` is `plan_version(params)` when the caller has it already (then no manifest is reread).
    """
    version, _ = planned or plan_version(params)
    existing = None if params.rebuild else complete_manifest(params.data, version)
    if existing is None:
        return None
    log.info("dataset %s already built from these inputs: nothing to do", version)
    if params.set_latest:
        set_latest(params.data, version)
    return _result(params.data, version, existing, cached=True)


def _text_bytes(meta: ExampleMeta) -> int:
    return len(meta.caption_abstract) + len(meta.caption_summary) + len(meta.title) + 64


def plan_chunks(examples: Sequence[ExampleMeta], sizes: Mapping[str, int], *, target_bytes: int,
                row_group_rows: int) -> list[ShardChunk]:
    """Cut each split's examples (in shard order) into shards of about `target_bytes`.

    A chunk closes at a row-group boundary once its estimated size (stored JPEG bytes plus its text)
    reaches the target, as the streaming writer closed a shard; at least one row group each, so the
    number of chunks (tasks) is bounded by the data's size over the target.
    """
    chunks: list[ShardChunk] = []
    for split in SPLITS:
        members = [m for m in examples if m.split == split]
        start, estimate = 0, 0
        for end, meta in enumerate(members, start=1):
            estimate += sizes.get(meta.image_sha256, 0) + _text_bytes(meta)
            if (end - start) % row_group_rows == 0 and estimate >= target_bytes:
                chunks.append(ShardChunk(split, sum(c.split == split for c in chunks), tuple(members[start:end])))
                start, estimate = end, 0
        if start < len(members):
            chunks.append(ShardChunk(split, sum(c.split == split for c in chunks), tuple(members[start:])))
    return chunks


def plan_build(params: BuildDatasetParams, planned: PlannedVersion | None = None) -> BuildPlan:
    """Join, split and chunk (metadata and file sizes only: no image is read).

    `planned` is `plan_version(params)` when the caller has it already (then no manifest is reread).
    """
    started = time.perf_counter()
    layout = DataLayout(params.data)
    tables = TableStore(layout.tables)
    version, inputs = planned or plan_version(params)
    # The versions whose digests named this dataset version, even if an input moved on since.
    examples = plan_examples({name: tables.read(name, digest=inputs[name]) if inputs[name] else None
                              for name in INPUT_TABLES}, params)
    images = ImageStore(layout.images)
    keys = {m.image_sha256 for m in examples.examples}
    prefix = images.root.rstrip("/") + "/"
    sizes = object_sizes(images.root, {k: images.path(k).removeprefix(prefix) for k in keys})
    chunks = plan_chunks(examples.examples, sizes, target_bytes=int(params.shard_target_mb * 1024 * 1024),
                         row_group_rows=params.row_group_rows)
    log.info("dataset %s: %d examples in %d shard chunks", version, len(examples.examples), len(chunks))
    return BuildPlan(params=params, version=version, inputs=inputs, examples=examples, chunks=chunks,
                     started=started)


# -- one shard ------------------------------------------------------------------------------------

def build_shard(params: BuildDatasetParams, version: str, chunk: ShardChunk | Mapping[str, Any], *,
                read_threads: int = _READ_THREADS, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Read, check and encode one chunk's images into its shard, written atomically.

    Returns JSON-safe data: `shard` (ShardFile as a dict, or None when every image was refused),
    `rejects` (quarantine records, JSON mode), `proposals` and `caption_words` (for the stats).
    `progress(n)` is told each example settled.
    """
    if not isinstance(chunk, ShardChunk):
        chunk = ShardChunk.from_payload(chunk)
    images = ImageStore(DataLayout(params.data).images)

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

    # One chunk, one shard: plan_chunks sized it.
    writer = SplitShardWriter(version_url(params.data, version), chunk.split, row_group_rows=params.row_group_rows,
                              compression_level=params.compression_level, first_part=chunk.part)
    rejects: list[dict[str, Any]] = []
    proposals: set[str] = set()
    words: dict[str, list[int]] = {"caption_summary": [], "caption_abstract": []}
    try:
        for meta, loaded in _read_ahead(chunk.examples, load, read_threads):
            if isinstance(loaded, tuple):
                reason, detail = loaded
                rejects.append(QuarantineRecord(record_id=meta.obsid, stage=STAGE, reason=reason,
                                                detail=f"image {meta.image_sha256[:12]}: {detail}"[:2000]
                                                ).model_dump(mode="json"))
            else:
                writer.add(Example.model_construct(**dict(meta), image=loaded))  # meta is validated already
                proposals.add(meta.proposal_id)
                words["caption_abstract"].append(len(meta.caption_abstract.split()))
                if meta.caption_summary:
                    words["caption_summary"].append(len(meta.caption_summary.split()))
            if progress is not None:
                progress(1)
        shard = writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"split": chunk.split, "part": chunk.part, "shard": shard_to_json(shard) if shard is not None else None,
            "rejects": rejects, "proposals": sorted(proposals), "caption_words": words}


# -- finish: quarantine, manifest, latest ---------------------------------------------------------

def finish_build(plan: BuildPlan, results: Sequence[Mapping[str, Any]]) -> StageResult:
    """Assemble the version from its shards' results (in plan order) and commit its manifest."""
    params, version = plan.params, plan.version
    tables = TableStore(DataLayout(params.data).tables)
    order = {(c.split, c.part): i for i, c in enumerate(plan.chunks)}
    results = sorted(results, key=lambda r: order[(r["split"], r["part"])])
    rejects = list(plan.examples.rejects) + [QuarantineRecord.model_validate(r) for res in results
                                             for r in res["rejects"]]
    shards: list[ShardFile] = [shard_from_json(r["shard"]) for r in results if r["shard"] is not None]
    counts: Counter[str] = Counter()
    proposals: dict[str, set[str]] = {s: set() for s in SPLITS}
    words: dict[str, list[int]] = {"caption_summary": [], "caption_abstract": []}
    for shard in shards:
        counts[shard.split] += shard.rows
    for res in results:
        proposals[res["split"]].update(res["proposals"])
        for name in words:
            words[name] += res["caption_words"][name]

    reasons = Counter(r.reason for r in rejects)
    if rejects:
        tables.append("quarantine", table_from_records(rejects, QUARANTINE_SCHEMA),
                      unique_on=("record_id", "stage", "reason"))  # a rebuild after a kill adds none twice
        log.warning("build_dataset %s: %d records quarantined: %s", version, len(rejects), dict(reasons))
    if not shards:
        raise InputError(f"no usable examples: {plan.examples.stats.get('examples_planned', 0)} planned, "
                         f"{len(rejects)} quarantined ({dict(reasons)}); see the quarantine table")

    elapsed = time.perf_counter() - plan.started
    written = sum(counts.values())
    stats: dict[str, Any] = {
        "version": version,
        "examples": dict(counts) | {"total": written},
        "proposals": {s: len(p) for s, p in proposals.items()},
        "quarantined": dict(reasons) | {"total": len(rejects)},
        "observations_without_image": plan.examples.stats.get("observations_without_image", 0),
        "summaries_from_older_abstract": plan.examples.stats.get("summaries_from_older_abstract", 0),
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
        inputs=plan.inputs, config=params.version_config(), stats=stats,
    )
    write_manifest(params.data, version, manifest)  # last: the version exists from here on
    if params.set_latest:
        set_latest(params.data, version)
    log.info("dataset %s: %s examples (%s), %d quarantined, %.1f s", version, written, dict(counts),
             len(rejects), elapsed)
    return _result(params.data, version, manifest, cached=False)


def run_build_dataset(params: BuildDatasetParams, progress: Progress | None = None,
                      read_threads: int = _READ_THREADS) -> StageResult:
    """Build (or find) the dataset version for these inputs and params. Its digest is the version id.

    The plain-Python stage: the flow's plan, shards and manifest, the shards one after another here.
    """
    planned = plan_version(params)  # the input manifests, read once for both steps
    existing = built_version(params, planned)
    if existing is not None:
        return existing
    plan = plan_build(params, planned)
    total = len(plan.examples.examples)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    results = [build_shard(params, plan.version, chunk, read_threads=read_threads, progress=tick)
               for chunk in plan.chunks]
    return finish_build(plan, results)
