"""The summarize stage: table `proposals` -> table `summaries` (+ `quarantine` rows).

Caching, at two levels, neither needing Prefect:

- stage: when `summaries`' manifest already records this proposals digest and this config, the
  stage returns at once without loading a model;
- per abstract: every summary ever made is kept in table `summary_cache`, keyed by
  sha256(abstract sha256 + backend + model + prompt version and hash + schema version and digest
  + sampling parameters). A run sends only abstracts without a cached summary to the model, so a
  refresh that adds one cycle summarizes only that cycle, and switching back to an earlier backend
  or prompt costs nothing. New summaries are appended to the cache after every chunk, so a run
  killed midway keeps what it finished.

`summaries` is then rewritten with one row per proposal for the current config: the table the
dataset builder reads by `proposal_id`, using the `caption` column.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
CHUNK_ABSTRACTS = 64  # progress and cache-append granularity (vLLM takes everything in one call)
CUTOFF_RATE_TARGET = 0.005

Progress = Callable[[int, int], None]  # (abstracts settled so far, abstracts to settle)


def default_model_id(params: SummarizeParams) -> str:
    """The model id a backend will report, known before loading it ('' = ask the server)."""
    if params.backend == "extractive":
        from tasks.summarize.backends.extractive import ExtractiveBackend

        return ExtractiveBackend(params.limits).model_id
    if params.backend == "transformers":
        from tasks.summarize.backends.transformers_backend import DEFAULT_TRANSFORMERS_MODEL

        return params.model or DEFAULT_TRANSFORMERS_MODEL
    if params.backend == "vllm":
        from tasks.summarize.backends.vllm_backend import DEFAULT_VLLM_MODEL

        return params.model or DEFAULT_VLLM_MODEL
    return params.model


def summary_config(params: SummarizeParams, model_id: str) -> dict[str, Any]:
    """Everything that determines a summary besides its abstract: the per-abstract cache identity."""
    uses_prompt = params.backend != "extractive"
    return {
        "backend": params.backend,
        "model_id": model_id,
        "prompt_version": load_prompt(params.prompt_version).key if uses_prompt else "none",
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "schema_digest": summary_schema_digest(params.limits),
        "sampling": params.sampling.to_json(),
    }


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
    known: set[tuple[str, str]] = set()
    if store.exists(QUARANTINE_TABLE):
        for row in store.read(QUARANTINE_TABLE, columns=["record_id", "stage", "reason"]).to_pylist():
            if row["stage"] == STAGE:
                known.add((row["record_id"], row["reason"]))
    fresh = [QuarantineRecord(record_id=pid, stage=STAGE, reason=reason, detail=detail[:500])
             for pid, reason, detail in failures if (pid, reason) not in known]
    if fresh:
        store.append(QUARANTINE_TABLE, table_from_records(fresh, QUARANTINE_SCHEMA))
    return len(fresh)


def _record(pid: str, sha: str, outcome: Outcome, config: dict[str, Any], key: str) -> dict[str, Any]:
    summary = outcome.summary
    assert summary is not None
    caption = build_caption(summary.objects_and_phenomena, summary.science_use_cases)
    record = SummaryRecord(
        proposal_id=pid, abstract_sha256=sha, objects_and_phenomena=summary.objects_and_phenomena,
        science_use_cases=summary.science_use_cases, caption=caption.text, caption_tokens=caption.tokens,
        truncated=caption.truncated, backend=config["backend"], model_id=config["model_id"],
        prompt_version=config["prompt_version"], schema_version=config["schema_version"],
        sampling=config["sampling"], seed=outcome.seed, attempts=outcome.attempts,
        output_tokens=outcome.output_tokens, cache_key=key)
    return record.model_dump()


def _generate(store: TableStore, backend: SummarizerBackend, params: SummarizeParams, config: dict[str, Any],
              pending: list[str], texts: dict[str, str], owner: dict[str, tuple[str, str]],
              outcomes: dict[str, Outcome], new_rows: dict[str, dict[str, Any]], stats: GenerationStats,
              progress: Progress | None) -> None:
    """Summarize `pending` cache keys chunk by chunk, appending each chunk's summaries to the cache."""
    settled = 0

    def tick(n: int) -> None:
        nonlocal settled
        settled += n
        if progress is not None:
            progress(settled, len(pending))

    chunk = len(pending) if params.backend == "vllm" else CHUNK_ABSTRACTS
    for start in range(0, len(pending), chunk):
        keys = pending[start:start + chunk]
        done = summarize_abstracts(backend, [texts[k] for k in keys], sampling=params.sampling, limits=params.limits,
                                   max_attempts=params.max_attempts, stats=stats, progress=tick)
        fresh = {}
        for key, outcome in zip(keys, done, strict=True):
            outcomes[key] = outcome
            if outcome.summary is not None:
                fresh[key] = _record(*owner[key], outcome, config, key)
        if fresh:
            store.append(CACHE_TABLE, pa.Table.from_pylist(list(fresh.values()), schema=CACHE_SCHEMA))
            new_rows.update(fresh)


def run_summarize(params: SummarizeParams, *, progress: Progress | None = None) -> StageResult:
    """Summarize every proposal abstract that has no cached summary for this config; write `summaries`."""
    started = time.perf_counter()
    resolve_backend(params.backend)  # an unknown name fails here, before any reading
    layout = DataLayout(params.data)
    store = TableStore(layout.tables)
    proposals_manifest = store.manifest(PROPOSALS_TABLE)
    if proposals_manifest is None:
        raise InputError(f"table {PROPOSALS_TABLE!r} does not exist under {layout.tables}: run `hubbleclip ingest` first")
    inputs = {PROPOSALS_TABLE: proposals_manifest.digest}
    outputs = {SUMMARIES_TABLE: store.table_dir(SUMMARIES_TABLE)}

    backend: SummarizerBackend | None = None
    model_id = default_model_id(params)
    if not model_id:  # the openai backend with no --model: the server says what it serves
        backend = create_backend(params)
        model_id = backend.model_id
    config = summary_config(params, model_id)
    stage_config = {**config, "limit": params.limit}
    previous = store.manifest(SUMMARIES_TABLE)
    if previous is not None and previous.inputs == inputs and previous.config == stage_config:
        log.info("summaries are up to date for proposals %s", inputs[PROPOSALS_TABLE][:12])
        if backend is not None:
            backend.close()
        return StageResult(stage=STAGE, digest=previous.digest, cached=True, outputs=outputs, stats=previous.stats)

    proposals = _read_proposals(store, params.limit)
    failures: list[tuple[str, str, str]] = []
    keyed: list[tuple[str, str, str]] = []  # (proposal_id, abstract sha256, cache key) of usable abstracts
    texts: dict[str, str] = {}  # cache key -> cleaned abstract, for the ones to generate
    cache = _read_cache(store)
    for pid, abstract in proposals:
        text = clean_abstract(abstract or "")
        if not text:
            failures.append((pid, "empty_abstract", "the proposal has no abstract text"))
            continue
        if len(text.split()) > MAX_ABSTRACT_WORDS:
            failures.append((pid, "abstract_too_long", f"{len(text.split())} words > {MAX_ABSTRACT_WORDS}"))
            continue
        sha = sha256_text(abstract)
        key = summary_cache_key(sha, config)
        keyed.append((pid, sha, key))
        if key not in cache:
            texts[key] = text  # identical abstracts (resubmissions) are generated once
    reused = sum(1 for _, _, key in keyed if key in cache)
    log.info("%d proposals: %d cached summaries, %d abstracts to summarize with %s/%s", len(proposals), reused,
             len(texts), params.backend, model_id)

    stats = GenerationStats()
    outcomes: dict[str, Outcome] = {}
    new_rows: dict[str, dict[str, Any]] = {}
    pending = list(texts)
    if pending:
        backend = backend or create_backend(params)
        try:
            _generate(store, backend, params, config, pending, texts, {k: (p, s) for p, s, k in keyed},
                      outcomes, new_rows, stats, progress)
        finally:
            backend.close()
    elif backend is not None:
        backend.close()

    rows = []
    for pid, sha, key in keyed:
        row = new_rows.get(key) or cache.get(key)
        if row is not None:
            rows.append({**row, "proposal_id": pid, "abstract_sha256": sha})
            continue
        outcome = outcomes[key]
        failures.append((pid, outcome.reason, f"after {outcome.attempts} attempt(s): {outcome.detail}"))
    quarantined = _quarantine(store, failures)

    seconds = time.perf_counter() - started
    generated = sum(1 for o in outcomes.values() if o.summary is not None)
    truncated = sum(1 for r in rows if r["truncated"])
    stats_out: dict[str, Any] = {
        "proposals": len(proposals), "summaries": len(rows), "reused": reused, "generated": generated,
        "failed": len(failures), "quarantined_new": quarantined,
        "failure_reasons": dict(Counter(reason for _, reason, _ in failures)),
        "truncation_rate": truncated / len(rows) if rows else 0.0,
        "caption_tokens_max": max((r["caption_tokens"] for r in rows), default=0),
        "caption_tokens_mean": round(sum(r["caption_tokens"] for r in rows) / len(rows), 2) if rows else 0.0,
        "abstracts_per_s": round(len(pending) / stats.generate_seconds, 2) if stats.generate_seconds else 0.0,
        "seconds": round(seconds, 3), "backend": params.backend, "model_id": model_id,
        **stats.as_dict(),
    }
    if stats_out["cut_off_rate"] >= CUTOFF_RATE_TARGET:
        log.warning("%.2f%% of outputs hit the token limit (target < 0.5%%): raise max_new_tokens",
                    100 * stats_out["cut_off_rate"])
    if truncated:
        log.warning("%d of %d captions needed items dropped to fit CLIP's 77 tokens", truncated, len(rows))
    table = pa.Table.from_pylist(rows, schema=SUMMARIES_SCHEMA)
    manifest = store.write(SUMMARIES_TABLE, table, inputs=inputs, config=stage_config, stats=stats_out,
                           schema_version=SUMMARY_SCHEMA_VERSION)
    log.info("summaries: %d rows (%d reused, %d new, %d failed) in %.1f s", len(rows), reused, generated,
             len(failures), seconds)
    return StageResult(stage=STAGE, digest=manifest.digest, cached=False, outputs=outputs, stats=stats_out)
