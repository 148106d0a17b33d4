"""The summarize stage: table `proposals` -> table `summaries` (+ `quarantine` rows).

Caching, at two levels, neither needing Prefect:

- stage: when `summaries`' manifest already records this proposals digest and this config, the
  stage returns at once without loading a model;
- per abstract: every summary ever made is kept in table `summary_cache`, keyed by
  sha256(abstract sha256 + backend + model + prompt version and hash + schema version and digest
  + sampling parameters). A run sends only abstracts without a cached summary to the model, so a
  refresh that adds one cycle summarizes only that cycle, and switching back to an earlier backend
  or prompt costs nothing. New summaries are appended to the cache after every batch, so a run
  killed midway keeps what it finished.

`summaries` is then rewritten with one row per proposal for the current config: the table the
dataset builder reads by `proposal_id`, using the `caption` column.

The stage comes in three parts so that the Prefect flow can spread the generation over workers
(flows/summarize.py maps a task over the batches; on Dask they run in other processes):
`plan_summarize` (stage cache, cache lookup), `summarize_batch` (a batch of abstracts in, JSON-safe
rows and failures out; the model is loaded once per process) and `finish_summarize` (the table,
written once). `run_summarize` runs the same three in order, so its output is the flow's, byte
for byte, whatever the task runner.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from schemas.arrow import QUARANTINE_SCHEMA, arrow_schema_for
from schemas.errors import InputError
from schemas.records import QuarantineRecord, sha256_text
from schemas.stage import StageResult
from schemas.summary import SUMMARY_SCHEMA_VERSION, SummarizeParams, SummaryRecord, summary_schema_digest
from storage.layout import DataLayout
from storage.tables import TableStore, table_from_records
from tasks.summarize.backends.base import SummarizerBackend, create_backend, resolve_backend
from tasks.summarize.backends.local_models import model_cache_id
from tasks.summarize.caption import build_caption
from tasks.summarize.generate import GenerationStats, Outcome, summarize_abstracts
from tasks.summarize.prompt import clean_abstract, load_prompt

log = logging.getLogger(__name__)

STAGE = "summarize"
PROPOSALS_TABLE = "proposals"
SUMMARIES_TABLE = "summaries"
CACHE_TABLE = "summary_cache"
QUARANTINE_TABLE = "quarantine"
CACHE_SCHEMA = arrow_schema_for(SummaryRecord)
# `summaries` is a pure function of the proposals and the config: it leaves out when each summary
# was made (kept in the cache), so two runs over the same input write the same file, hence the
# same digest and the same downstream dataset version (docs/reliability.md).
SUMMARIES_SCHEMA = pa.schema([f for f in CACHE_SCHEMA if f.name != "created_at"])
MAX_ABSTRACT_WORDS = 1500  # ~2k tokens: real abstracts are < 500 words; longer is a parsing accident
CHUNK_ABSTRACTS = 64  # abstracts per batch: a task, a cache append
# vLLM's batches: one LLM.chat call each, so its scheduler has far more sequences than it can run
# at once (a few hundred on an H100), while every 1,024 finished abstracts reach the cache: a run
# killed late keeps all but the last batch. (~4,400 abstracts: 5 batches.)
VLLM_BATCH_PROMPTS = 1024
MAX_BATCHES = 128  # more pending abstracts than this many chunks hold make the batches bigger, not more
CUTOFF_RATE_TARGET = 0.005

Progress = Callable[[int, int], None]  # (abstracts settled so far, abstracts to settle)


def default_model_id(params: SummarizeParams) -> str:
    """The model id a backend will report, known before loading it ('' = ask the server)."""
    if params.backend == "extractive":
        from tasks.summarize.backends.extractive import extractive_model_id

        return extractive_model_id()
    # A local model directory is keyed by what it holds, not by how its path was spelt.
    if params.backend == "transformers":
        from tasks.summarize.backends.transformers_backend import DEFAULT_TRANSFORMERS_MODEL

        return model_cache_id(params.model or DEFAULT_TRANSFORMERS_MODEL)
    if params.backend == "vllm":
        from tasks.summarize.backends.vllm_backend import DEFAULT_VLLM_MODEL

        return model_cache_id(params.model or DEFAULT_VLLM_MODEL)
    return params.model


# Backends that read no prompt and sample nothing: the prompt and the sampling settings do not
# change their summaries, so they stay out of the cache key (a new seed must not miss the cache).
_NO_PROMPT_NO_SAMPLING = {"extractive"}


def summary_config(params: SummarizeParams, model_id: str) -> dict[str, Any]:
    """Everything that determines a summary besides its abstract: the per-abstract cache identity."""
    config: dict[str, Any] = {
        "backend": params.backend,
        "model_id": model_id,
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "schema_digest": summary_schema_digest(params.limits),
    }
    if params.backend not in _NO_PROMPT_NO_SAMPLING:
        config["prompt_version"] = load_prompt(params.prompt_version).key
        config["sampling"] = params.sampling.to_json()
    return config


def summary_cache_key(abstract_sha256: str, config: dict[str, Any]) -> str:
    blob = json.dumps({"abstract_sha256": abstract_sha256, **config}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def summarize_texts(abstracts: Sequence[str], params: SummarizeParams, *,
                    backend: SummarizerBackend | None = None,
                    stats: GenerationStats | None = None) -> list[Outcome]:
    """Summarize abstracts held in memory (no tables, no cache); empty ones fail as 'empty_abstract'."""
    cleaned = [clean_abstract(a) for a in abstracts]
    outcomes = [Outcome(None, "empty_abstract", "the abstract is empty") for _ in cleaned]
    todo = [i for i, text in enumerate(cleaned) if text]
    if not todo:
        return outcomes
    own = backend is None
    backend = backend or create_backend(params)
    try:
        done = summarize_abstracts(backend, [cleaned[i] for i in todo], sampling=params.sampling,
                                   limits=params.limits, max_attempts=params.max_attempts, stats=stats)
    finally:
        if own:
            backend.close()
    for index, outcome in zip(todo, done, strict=True):
        outcomes[index] = outcome
    return outcomes


def _read_proposals(store: TableStore, limit: int) -> list[tuple[str, str]]:
    table = store.read(PROPOSALS_TABLE, columns=["proposal_id", "abstract"])
    rows = sorted(zip(table.column("proposal_id").to_pylist(), table.column("abstract").to_pylist(), strict=True),
                  key=lambda r: int(r[0]))
    return rows[:limit] if limit else rows


def _read_cache(store: TableStore) -> dict[str, dict[str, Any]]:
    if not store.exists(CACHE_TABLE):
        return {}
    return {row["cache_key"]: row for row in store.read(CACHE_TABLE).to_pylist()}


def _quarantine(store: TableStore, failures: list[tuple[str, str, str]]) -> int:
    """Append (proposal_id, reason, detail) rows not already quarantined by this stage; returns how many."""
    if not failures:
        return 0
    before = store.manifest(QUARANTINE_TABLE)
    records = [QuarantineRecord(record_id=pid, stage=STAGE, reason=reason, detail=detail[:500])
               for pid, reason, detail in failures]
    after = store.append(QUARANTINE_TABLE, table_from_records(records, QUARANTINE_SCHEMA),
                         unique_on=("record_id", "stage", "reason"))  # a rerun quarantines nothing twice
    return after.rows - (before.rows if before is not None else 0)


# -- backends shared by the batches one process runs -----------------------------------------------

# Settings that do not change the backend that is built, so runs that differ only in them share a
# loaded model.
_NOT_BACKEND = {"data", "limit", "max_attempts", "retry_failed"}
# Backends whose generate() may run in several threads at once: the extractive one is pure, and
# the openai one is a client whose one request pool bounds the requests of all its batches
# together. The others hold a model (transformers on one device, vLLM scheduling its own batch)
# and take one batch at a time.
_CONCURRENT_BACKENDS = {"extractive", "openai"}


@dataclass
class _Loaded:
    backend: SummarizerBackend
    lock: threading.Lock = field(default_factory=threading.Lock)


# One loaded backend per process (a Dask worker, or the flow's own process on the thread runner),
# keyed by its configuration: the batches a worker runs reuse it instead of reloading a model.
_BACKENDS: dict[str, _Loaded] = {}
_BACKENDS_LOCK = threading.Lock()


def backend_key(params: SummarizeParams) -> str:
    """What identifies a backend instance: its params less the data root, the limit and the retry settings."""
    return json.dumps(params.model_dump(mode="json", exclude=_NOT_BACKEND), sort_keys=True)


def _loaded_backend(params: SummarizeParams, *, adopt: SummarizerBackend | None = None) -> _Loaded:
    key = backend_key(params)
    with _BACKENDS_LOCK:
        loaded = _BACKENDS.get(key)
        if loaded is not None:
            if adopt is not None and adopt is not loaded.backend:
                adopt.close()
            return loaded
        for other in list(_BACKENDS):  # at most one model per process: drop the previous one
            _close(_BACKENDS.pop(other))
        loaded = _BACKENDS[key] = _Loaded(adopt or create_backend(params))
        return loaded


def _close(loaded: _Loaded) -> None:
    with loaded.lock:  # not while another batch is using it
        loaded.backend.close()


def keep_backend(params: SummarizeParams, backend: SummarizerBackend) -> None:
    """Hand an already created backend to this process's cache (planning made it to ask for a model id)."""
    _loaded_backend(params, adopt=backend)


@contextmanager
def shared_backend(params: SummarizeParams) -> Iterator[SummarizerBackend]:
    """This process's backend for `params`, loaded once; exclusive while in use unless it is
    safe to share between threads."""
    loaded = _loaded_backend(params)
    if params.backend in _CONCURRENT_BACKENDS:
        yield loaded.backend
        return
    with loaded.lock:
        yield loaded.backend


def release_backends() -> None:
    """Close this process's cached backends (the end of a run in the process that started it)."""
    with _BACKENDS_LOCK:
        loaded = list(_BACKENDS.values())
        _BACKENDS.clear()
    for item in loaded:
        _close(item)


# -- planning: the stage cache and the per-abstract cache lookup ----------------------------------

@dataclass
class SummarizePlan:
    """What a run has to do, decided before any generation (in the flow, or in run_summarize)."""

    params: SummarizeParams
    started: float
    inputs: dict[str, str]
    outputs: dict[str, str]
    model_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    stage_config: dict[str, Any] = field(default_factory=dict)
    cached: StageResult | None = None  # set when the summaries table is already up to date
    proposals: int = 0
    keyed: list[tuple[str, str, str]] = field(default_factory=list)  # (proposal_id, abstract sha256, cache key)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (proposal_id, reason, detail)
    cache_rows: dict[str, dict[str, Any]] = field(default_factory=dict)  # cache key -> cached summary row
    pending: list[dict[str, str]] = field(default_factory=list)  # one item per abstract to generate

    @property
    def reused(self) -> int:
        return sum(1 for _, _, key in self.keyed if key in self.cache_rows)


def plan_summarize(params: SummarizeParams) -> SummarizePlan:
    """Read the proposals and the summary cache; decide what to generate (nothing, when up to date)."""
    started = time.perf_counter()
    resolve_backend(params.backend)  # an unknown name fails here, before any reading
    layout = DataLayout(params.data)
    store = TableStore(layout.tables)
    proposals_manifest = store.manifest(PROPOSALS_TABLE)
    if proposals_manifest is None:
        raise InputError(f"table {PROPOSALS_TABLE!r} does not exist under {layout.tables}: run `hubbleclip ingest` first")
    plan = SummarizePlan(params=params, started=started, inputs={PROPOSALS_TABLE: proposals_manifest.digest},
                         outputs={SUMMARIES_TABLE: store.table_dir(SUMMARIES_TABLE)})
    model_id = default_model_id(params)
    if not model_id:  # the openai backend with no --model: the server says what it serves
        backend = create_backend(params)
        model_id = backend.model_id
        keep_backend(params, backend)  # the batches this process runs reuse it
    plan.model_id = model_id
    plan.config = summary_config(params, model_id)
    plan.stage_config = {**plan.config, "limit": params.limit}
    previous = store.manifest(SUMMARIES_TABLE)
    # Failed abstracts have no cached summary, so skipping this check sends exactly them to the model.
    current = previous is not None and previous.inputs == plan.inputs and previous.config == plan.stage_config
    if current and (damaged := store.damaged_files(SUMMARIES_TABLE)):
        # The summaries are rewritten whole from the summary cache: no abstract goes to the model again.
        log.warning("summaries table: %s missing or not matching its manifest: writing it again",
                    ", ".join(damaged))
        current = False
    if current and not params.retry_failed:
        log.info("summaries are up to date for proposals %s", plan.inputs[PROPOSALS_TABLE][:12])
        plan.cached = StageResult(stage=STAGE, digest=previous.digest, cached=True, outputs=plan.outputs,
                                  stats=previous.stats)
        return plan

    proposals = _read_proposals(store, params.limit)
    plan.proposals = len(proposals)
    cache = _read_cache(store)
    queued: set[str] = set()
    for pid, abstract in proposals:
        text = clean_abstract(abstract or "")
        if not text:
            plan.failures.append((pid, "empty_abstract", "the proposal has no abstract text"))
            continue
        if len(text.split()) > MAX_ABSTRACT_WORDS:
            plan.failures.append((pid, "abstract_too_long", f"{len(text.split())} words > {MAX_ABSTRACT_WORDS}"))
            continue
        sha = sha256_text(abstract)
        key = summary_cache_key(sha, plan.config)
        plan.keyed.append((pid, sha, key))
        if key in cache:
            plan.cache_rows[key] = cache[key]
        elif key not in queued:  # identical abstracts (resubmissions) are generated once
            queued.add(key)
            plan.pending.append({"key": key, "proposal_id": pid, "abstract_sha256": sha, "text": text})
    log.info("%d proposals: %d cached summaries, %d abstracts to summarize with %s/%s", len(proposals),
             plan.reused, len(plan.pending), params.backend, model_id)
    return plan


def summary_batches(plan: SummarizePlan) -> list[list[dict[str, str]]]:
    """The pending abstracts in batches, the same on every task runner (so are the outputs).

    vLLM schedules its own batch, so it gets VLLM_BATCH_PROMPTS per call; others CHUNK_ABSTRACTS.
    Either grows so that a run never has more than MAX_BATCHES batches (bounded task count).
    """
    pending = plan.pending
    if not pending:
        return []
    chunk = VLLM_BATCH_PROMPTS if plan.params.backend == "vllm" else CHUNK_ABSTRACTS
    size = max(chunk, math.ceil(len(pending) / MAX_BATCHES))
    return [pending[start:start + size] for start in range(0, len(pending), size)]


# -- one batch: plain data in, plain data out -------------------------------------------------------

def _record(item: dict[str, str], outcome: Outcome, config: dict[str, Any]) -> dict[str, Any]:
    summary = outcome.summary
    assert summary is not None
    caption = build_caption(summary.objects_and_phenomena, summary.science_use_cases)
    # A backend that ignores sampling records none (and seed 0), so its rows do not depend on the seed.
    samples = "sampling" in config
    record = SummaryRecord(
        proposal_id=item["proposal_id"], abstract_sha256=item["abstract_sha256"],
        objects_and_phenomena=summary.objects_and_phenomena,
        science_use_cases=summary.science_use_cases, caption=caption.text, caption_tokens=caption.tokens,
        truncated=caption.truncated, backend=config["backend"], model_id=config["model_id"],
        prompt_version=config.get("prompt_version", "none"), schema_version=config["schema_version"],
        sampling=config.get("sampling", "none"), seed=outcome.seed if samples else 0, attempts=outcome.attempts,
        output_tokens=outcome.output_tokens, cache_key=item["key"])
    return record.model_dump(mode="json")


def summarize_batch(params: SummarizeParams, config: dict[str, Any], items: Sequence[dict[str, str]], *,
                    progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Summarize one batch of pending abstracts (plan.pending items).

    Returns JSON-safe data only, so it can cross processes and machines: `rows` (summary_cache
    rows, JSON mode), `failures` ({key, reason, detail, attempts}) and `stats` (GenerationStats).
    The model is this process's shared backend for `params` (loaded once per process).
    """
    stats = GenerationStats()
    texts = [item["text"] for item in items]
    with shared_backend(params) as shared:
        done = summarize_abstracts(shared, texts, sampling=params.sampling, limits=params.limits,
                                   max_attempts=params.max_attempts, stats=stats, progress=progress)
    rows, failures = [], []
    for item, outcome in zip(items, done, strict=True):
        if outcome.summary is not None:
            rows.append(_record(item, outcome, config))
        else:
            failures.append({"key": item["key"], "reason": outcome.reason, "detail": outcome.detail,
                             "attempts": outcome.attempts})
    return {"rows": rows, "failures": failures, "stats": _stats_json(stats)}


def _stats_json(stats: GenerationStats) -> dict[str, Any]:
    return {"outputs": stats.outputs, "failures": dict(stats.failures), "input_tokens": stats.input_tokens,
            "output_tokens": stats.output_tokens, "generate_seconds": stats.generate_seconds}


def _merge_stats(batches: Iterable[dict[str, Any]]) -> GenerationStats:
    total = GenerationStats()
    for batch in batches:
        s = batch["stats"]
        total.outputs += s["outputs"]
        total.failures.update(s["failures"])
        total.input_tokens += s["input_tokens"]
        total.output_tokens += s["output_tokens"]
        total.generate_seconds += s["generate_seconds"]
    return total


def cache_summaries(data: str, batch: dict[str, Any]) -> int:
    """Append a finished batch's new summaries to `summary_cache` (a killed run keeps them)."""
    rows = [SummaryRecord.model_validate(row).model_dump() for row in batch["rows"]]
    if rows:
        TableStore(DataLayout(data).tables).append(CACHE_TABLE, pa.Table.from_pylist(rows, schema=CACHE_SCHEMA))
    return len(rows)


# -- the end: one summaries table ------------------------------------------------------------------

def finish_summarize(plan: SummarizePlan, batches: Sequence[dict[str, Any]], *,
                     generate_seconds: float | None = None) -> StageResult:
    """Write `summaries` (rows in proposal order) and the new quarantine rows from the batches' results.

    `batches` are summarize_batch results, already appended to the cache. `generate_seconds` is the
    wall time of the generation (batches in parallel); by default the sum of the batches' times.
    """
    if plan.cached is not None:
        return plan.cached
    params = plan.params
    store = TableStore(DataLayout(params.data).tables)
    new_rows: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    for batch in batches:
        for row in batch["rows"]:
            new_rows[row["cache_key"]] = SummaryRecord.model_validate(row).model_dump()
        for failure in batch["failures"]:
            outcomes[failure["key"]] = failure
    stats = _merge_stats(batches)
    if generate_seconds is not None:
        stats.generate_seconds = generate_seconds

    failures = list(plan.failures)
    rows = []
    for pid, sha, key in plan.keyed:
        row = new_rows.get(key) or plan.cache_rows.get(key)
        if row is not None:
            rows.append({**row, "proposal_id": pid, "abstract_sha256": sha})
            continue
        outcome = outcomes.get(key) or {"reason": "not_attempted", "detail": "no batch returned it", "attempts": 0}
        failures.append((pid, outcome["reason"], f"after {outcome['attempts']} attempt(s): {outcome['detail']}"))
    quarantined = _quarantine(store, failures)

    seconds = time.perf_counter() - plan.started
    generated = len(new_rows)
    truncated = sum(1 for r in rows if r["truncated"])
    stats_out: dict[str, Any] = {
        "proposals": plan.proposals, "summaries": len(rows), "reused": plan.reused, "generated": generated,
        "failed": len(failures), "quarantined_new": quarantined,
        "failure_reasons": dict(Counter(reason for _, reason, _ in failures)),
        "truncation_rate": truncated / len(rows) if rows else 0.0,
        "caption_tokens_max": max((r["caption_tokens"] for r in rows), default=0),
        "caption_tokens_mean": round(sum(r["caption_tokens"] for r in rows) / len(rows), 2) if rows else 0.0,
        "abstracts_per_s": round(len(plan.pending) / stats.generate_seconds, 2) if stats.generate_seconds else 0.0,
        "batches": len(batches),
        "seconds": round(seconds, 3), "backend": params.backend, "model_id": plan.model_id,
        **stats.as_dict(),
    }
    if stats_out["cut_off_rate"] >= CUTOFF_RATE_TARGET:
        log.warning("%.2f%% of outputs hit the token limit (target < 0.5%%): raise max_new_tokens",
                    100 * stats_out["cut_off_rate"])
    if truncated:
        log.warning("%d of %d captions needed items dropped to fit CLIP's 77 tokens", truncated, len(rows))
    table = pa.Table.from_pylist(rows, schema=SUMMARIES_SCHEMA)
    manifest = store.write(SUMMARIES_TABLE, table, inputs=plan.inputs, config=plan.stage_config, stats=stats_out,
                           schema_version=SUMMARY_SCHEMA_VERSION)
    log.info("summaries: %d rows (%d reused, %d new, %d failed) in %.1f s", len(rows), plan.reused, generated,
             len(failures), seconds)
    return StageResult(stage=STAGE, digest=manifest.digest, cached=False, outputs=plan.outputs, stats=stats_out)


def run_summarize(params: SummarizeParams, *, progress: Progress | None = None) -> StageResult:
    """Summarize every proposal abstract that has no cached summary for this config; write `summaries`.

    The plain-Python stage: the same plan, batches and table as the Prefect flow, run in order here.
    """
    try:
        plan = plan_summarize(params)
        if plan.cached is not None:
            return plan.cached
        settled = 0

        def tick(n: int) -> None:
            nonlocal settled
            settled += n
            if progress is not None:
                progress(settled, len(plan.pending))

        results = []
        for batch in summary_batches(plan):
            result = summarize_batch(params, plan.config, batch, progress=tick)
            cache_summaries(params.data, result)
            results.append(result)
        return finish_summarize(plan, results)
    finally:
        release_backends()  # close the model as before: a plain run keeps nothing loaded
