"""run_summarize: proposals table in, summaries table out, cached per abstract and per stage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from schemas.errors import InputError
from schemas.summary import SUMMARY_SCHEMA_VERSION, SummarizeParams, SummaryRecord
from storage.layout import DataLayout
from storage.tables import TableStore
from tasks.summarize import run_summarize
from tasks.summarize.caption import count_clip_tokens, join_caption
from tasks.summarize.stage import (
    CACHE_TABLE,
    SUMMARIES_TABLE,
    default_model_id,
    summary_cache_key,
    summary_config,
)

ABSTRACTS = {
    "101": "We propose to measure internal proper motions of stars in globular clusters.",
    "102": "Strong gravitational lensing by merging galaxy clusters maps their dark matter.",
    "103": "A snapshot survey of planetary nebulae to measure their expansion ages.",
    "104": "We will search for exoplanets transiting red dwarfs with precise photometry.",
    "105": "",
}


def _store(data: str) -> TableStore:
    return TableStore(DataLayout(data).tables)


def test_summaries_table_has_one_validated_row_per_proposal(tmp_path, write_proposals):
    data = write_proposals(str(tmp_path), list(ABSTRACTS.items()))
    result = run_summarize(SummarizeParams(data=data))
    store = _store(data)
    rows = {r["proposal_id"]: r for r in store.read(SUMMARIES_TABLE).to_pylist()}
    assert sorted(rows) == ["101", "102", "103", "104"]
    row = rows["102"]
    assert {"dark matter", "galaxy clusters", "gravitational lensing"} <= set(row["objects_and_phenomena"])
    assert row["caption"] == join_caption(row["objects_and_phenomena"], row["science_use_cases"])
    assert all(r["caption_tokens"] <= 77 and not r["truncated"] for r in rows.values())
    assert (row["backend"], row["prompt_version"], row["schema_version"]) == ("extractive", "none", SUMMARY_SCHEMA_VERSION)
    assert row["model_id"].startswith("vocabulary-")
    assert (row["sampling"], row["seed"]) == ("none", 0)  # extractive samples nothing: no settings to record
    assert len(row["abstract_sha256"]) == 64 and "created_at" not in row  # deterministic: no clock
    assert all(r["created_at"] is not None for r in store.read(CACHE_TABLE).to_pylist())
    manifest = store.manifest(SUMMARIES_TABLE)
    assert manifest.inputs == {"proposals": store.manifest("proposals").digest}
    assert result.digest == manifest.digest and result.outputs["summaries"].endswith("tables/summaries")
    quarantine = [r for r in store.read("quarantine").to_pylist() if r["stage"] == "summarize"]
    assert [(r["record_id"], r["reason"]) for r in quarantine] == [("105", "empty_abstract")]
    stats = result.stats
    assert (stats["summaries"], stats["generated"], stats["failed"]) == (4, 4, 1)
    assert stats["invalid_json_rate"] == 0.0 and stats["cut_off_rate"] == 0.0 and stats["truncation_rate"] == 0.0
    assert stats["abstracts_per_s"] > 0 and stats["failure_reasons"] == {"empty_abstract": 1}


def test_unchanged_input_is_a_stage_cache_hit(tmp_path, write_proposals):
    data = write_proposals(str(tmp_path), list(ABSTRACTS.items()))
    first = run_summarize(SummarizeParams(data=data))
    again = run_summarize(SummarizeParams(data=data))
    assert again.cached and again.digest == first.digest
    quarantine = _store(data).read("quarantine").to_pylist()
    assert len(quarantine) == 1  # not quarantined twice


def test_a_damaged_summaries_file_is_written_again_from_the_cache(tmp_path, write_proposals):
    from pathlib import Path

    data = write_proposals(str(tmp_path), list(ABSTRACTS.items()))
    first = run_summarize(SummarizeParams(data=data))
    store = _store(data)
    [entry] = store.manifest(SUMMARIES_TABLE).files
    part = Path(store.table_dir(SUMMARIES_TABLE)) / entry.path
    damaged = bytearray(part.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    part.write_bytes(bytes(damaged))
    assert store.damaged_files(SUMMARIES_TABLE) == [entry.path]
    again = run_summarize(SummarizeParams(data=data))  # was: "unchanged inputs", the damage left in place
    assert not again.cached and again.stats["generated"] == 0  # every summary from the cache
    assert again.digest == first.digest and store.damaged_files(SUMMARIES_TABLE) == []
    assert len(store.read(SUMMARIES_TABLE)) == 4
    part.unlink()
    assert store.damaged_files(SUMMARIES_TABLE) == [entry.path]
    assert not run_summarize(SummarizeParams(data=data)).cached and store.damaged_files(SUMMARIES_TABLE) == []


def test_only_new_or_changed_abstracts_are_summarized(tmp_path, write_proposals):
    data = write_proposals(str(tmp_path), list(ABSTRACTS.items()))
    run_summarize(SummarizeParams(data=data))
    changed = {**ABSTRACTS, "103": "Deep imaging of dwarf galaxies to derive star formation histories.",
               "106": "Ultraviolet spectroscopy of quasars probes the intergalactic medium."}
    write_proposals(data, list(changed.items()))
    result = run_summarize(SummarizeParams(data=data))
    assert not result.cached
    assert (result.stats["reused"], result.stats["generated"], result.stats["summaries"]) == (3, 2, 5)
    rows = {r["proposal_id"]: r for r in _store(data).read(SUMMARIES_TABLE).to_pylist()}
    assert "dwarf galaxies" in rows["103"]["objects_and_phenomena"]
    assert len(_store(data).read(CACHE_TABLE)) == 6  # every summary ever made, old 103 included


def test_other_settings_are_other_cache_entries_and_switching_back_is_free(tmp_path, write_proposals):
    data = write_proposals(str(tmp_path), list(ABSTRACTS.items()))
    run_summarize(SummarizeParams(data=data))
    short = run_summarize(SummarizeParams(data=data, max_words=2))
    assert short.stats["generated"] == 4
    rows = _store(data).read(SUMMARIES_TABLE).to_pylist()
    assert all(len(i.split()) <= 2 for r in rows for i in r["objects_and_phenomena"] + r["science_use_cases"])
    back = run_summarize(SummarizeParams(data=data))
    assert (back.stats["generated"], back.stats["reused"]) == (0, 4)


def test_limit_and_missing_input(tmp_path, write_proposals):
    with pytest.raises(InputError, match="table 'proposals' does not exist.*hubbleclip ingest"):
        run_summarize(SummarizeParams(data=str(tmp_path / "empty")))
    data = write_proposals(str(tmp_path / "d"), list(ABSTRACTS.items()))
    assert run_summarize(SummarizeParams(data=data, limit=2)).stats["summaries"] == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_the_transformers_backend_through_the_stage(tmp_path, write_proposals):
    data = write_proposals(str(tmp_path), list(ABSTRACTS.items())[:3])
    tiny = dict(backend="transformers", model="tiny-random", device="cpu", max_items=2, max_words=2, max_word_chars=8)
    result = run_summarize(SummarizeParams(data=data, max_new_tokens=160, **tiny))
    assert result.stats["summaries"] == 3 and result.stats["cut_off_rate"] == 0.0
    assert result.stats["output_tokens"] > 0 and result.stats["tokens_per_s"] > 0
    row = _store(data).read(SUMMARIES_TABLE).to_pylist()[0]
    assert row["model_id"] == "tiny-random" and row["prompt_version"].startswith("v1+")
    # A token limit too small for any summary: every output is cut off, retried, then quarantined.
    starved = run_summarize(SummarizeParams(data=data, max_new_tokens=16, max_attempts=2, **tiny))
    assert starved.stats["summaries"] == 0 and starved.stats["cut_off_rate"] == 1.0
    assert starved.stats["failure_reasons"] == {"cut_off": 3}
    reasons = {r["reason"] for r in _store(data).read("quarantine").to_pylist()}
    assert reasons == {"cut_off"}


def test_quarantined_abstracts_are_tried_again_only_when_asked(tmp_path, write_proposals, monkeypatch):
    from tasks.summarize.backends.base import RawOutput
    from tasks.summarize.backends.extractive import ExtractiveBackend

    data = write_proposals(str(tmp_path), list(ABSTRACTS.items())[:3])
    real = ExtractiveBackend.generate
    monkeypatch.setattr(ExtractiveBackend, "generate", lambda self, abstracts, sampling: [
        RawOutput("{broken") for _ in abstracts])  # e.g. a model that emitted junk this time
    failed = run_summarize(SummarizeParams(data=data))
    assert failed.stats["summaries"] == 0 and failed.stats["failed"] == 3
    monkeypatch.setattr(ExtractiveBackend, "generate", real)

    again = run_summarize(SummarizeParams(data=data))
    assert again.cached and again.stats["summaries"] == 0  # the stage is current for these inputs
    retried = run_summarize(SummarizeParams(data=data, retry_failed=True))
    assert not retried.cached and retried.stats["summaries"] == 3 and retried.stats["generated"] == 3
    assert run_summarize(SummarizeParams(data=data)).digest == retried.digest  # no new key for the flag


def test_extractive_cache_key_ignores_sampling_and_a_new_seed_reuses_everything(tmp_path, write_proposals):
    keys = set()
    for changes in ({}, {"seed": 1}, {"max_new_tokens": 512}, {"temperature": 0.7}, {"prompt_version": "v9"}):
        params = SummarizeParams(backend="extractive", **changes)
        keys.add(summary_cache_key("0" * 64, summary_config(params, default_model_id(params))))
    assert len(keys) == 1
    data = write_proposals(str(tmp_path), list(ABSTRACTS.items()))
    first = run_summarize(SummarizeParams(data=data))
    again = run_summarize(SummarizeParams(data=data, seed=7, max_new_tokens=1000))
    assert again.cached and again.digest == first.digest
    # The LLM backends sample: their keys still follow the settings.
    llm = [SummarizeParams(backend="transformers", model="tiny-random", **c) for c in ({}, {"seed": 1})]
    assert len({summary_cache_key("0" * 64, summary_config(p, "tiny-random")) for p in llm}) == 2


def test_extractive_model_id_follows_edits_to_its_code_and_the_curated_classes(monkeypatch):
    import schemas.vocabulary
    from tasks.summarize import vocabulary
    from tasks.summarize.backends import extractive

    def model_id_if_edited(name: str | None, appended: str = "") -> str:
        """The model id as if `appended` were added to the source file ending in `name`."""
        real = Path.read_text

        def edited(path: Path, *args, **kwargs) -> str:
            return real(path, *args, **kwargs) + (appended if name and path.as_posix().endswith(name) else "")

        monkeypatch.setattr(Path, "read_text", edited)
        extractive._module_code_digest.cache_clear()
        try:
            return extractive.ExtractiveBackend().model_id
        finally:
            monkeypatch.undo()
            extractive._module_code_digest.cache_clear()

    now = model_id_if_edited(None)
    assert now.startswith("vocabulary-") and now == extractive.extractive_model_id()
    code, comment = "\ndef _new_helper():\n    return 1\n", "\n# a comment, no code\n"
    for matcher in ("tasks/summarize/vocabulary.py", "tasks/summarize/backends/extractive.py"):
        assert model_id_if_edited(matcher, code) != now, matcher
        assert model_id_if_edited(matcher, comment) == now, matcher
    # schemas/vocabulary.py is read for its curated classes' values, not its text (PAPER_QUERIES: evaluation).
    assert model_id_if_edited("schemas/vocabulary.py", code) == now
    assert model_id_if_edited("tasks/summarize/caption.py", code) == now  # not what the summaries depend on
    with monkeypatch.context() as patched:
        patched.setattr(vocabulary, "CURATED_CLASSES", (*vocabulary.CURATED_CLASSES[:-1], "binary star pairs"))
        assert extractive.extractive_model_id() != now
    with monkeypatch.context() as patched:
        patched.setattr(schemas.vocabulary, "PAPER_QUERIES", (*schemas.vocabulary.PAPER_QUERIES, "white dwarfs"))
        assert extractive.extractive_model_id() == now


def _model_dir(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_a_local_model_directory_is_keyed_by_its_contents_not_its_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt = _model_dir(tmp_path / "ckpt", b"\x01" * 3_000_000)

    def model_id(model: str) -> str:
        return default_model_id(SummarizeParams(backend="transformers", model=model))

    relative, absolute = model_id("./ckpt"), model_id(str(ckpt))
    assert relative == absolute and relative.startswith(f"{ckpt.resolve()}@")
    assert model_id("ckpt/") == relative
    (ckpt / "model.safetensors").write_bytes(b"\x02" * 3_000_000)  # retrained: same name, same size
    assert model_id("./ckpt") != relative
    (ckpt / "config.json").write_text('{"model_type": "llama", "rope_theta": 1}')
    assert len({relative, model_id("./ckpt"), model_id(str(ckpt))}) == 2
    # A hub id or a named model is its name; so is a vLLM model, local or not.
    assert model_id("org/some-model") == "org/some-model" and model_id("tiny-random") == "tiny-random"
    vllm = SummarizeParams(backend="vllm", model=os.path.join(".", "ckpt"))
    assert default_model_id(vllm) == model_id(str(ckpt))


def test_the_run_reports_the_real_length_of_a_caption_clip_will_cut(tmp_path, write_proposals, monkeypatch):
    from tasks.summarize.backends.base import RawOutput
    from tasks.summarize.backends.extractive import ExtractiveBackend

    rare = " ".join(["x9q7z3k1v8j2w6p4m5n0b7c3"] * 4)  # 4 rare 24-character words: within the grammar
    answer = json.dumps({"objects_and_phenomena": [rare], "science_use_cases": [rare]})
    monkeypatch.setattr(ExtractiveBackend, "generate", lambda self, abstracts, sampling: [
        RawOutput(answer) for _ in abstracts])
    data = write_proposals(str(tmp_path), list(ABSTRACTS.items())[:1])
    result = run_summarize(SummarizeParams(data=data))
    real = count_clip_tokens(join_caption([rare], [rare]))
    assert real > 77 and result.stats["caption_tokens_max"] == real and result.stats["truncation_rate"] == 1.0
    (row,) = _store(data).read(SUMMARIES_TABLE).to_pylist()
    assert (row["caption_tokens"], row["truncated"]) == (real, True)


def test_a_row_may_count_more_than_77_tokens_only_when_marked_truncated():
    row = dict(proposal_id="12", abstract_sha256="0" * 64, objects_and_phenomena=["a"], science_use_cases=["b"],
               caption="a; b", caption_tokens=195, backend="extractive", model_id="m", prompt_version="none",
               schema_version=1, sampling="none", seed=0, attempts=1, output_tokens=1, cache_key="0" * 64)
    assert SummaryRecord(**row, truncated=True).caption_tokens == 195
    with pytest.raises(ValueError, match="not marked truncated"):
        SummaryRecord(**row, truncated=False)
