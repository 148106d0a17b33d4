"""Bad inputs after ingest: each is a quarantine row with its reason or a clear error naming the
input, never a crash and never a silent loss.

(The archive-side ones, bombs, XXE, `../`, malformed ids, non-UTF-8, giant abstracts, are in
test_hostile_archive.py.)
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.arrow import PREVIEWS_SCHEMA
from schemas.errors import InputError
from schemas.manifest import FileEntry
from storage import DataLayout, ImageStore, TableStore
from tests.chaos.conftest import run_stage_inline, stage_params
from tests.chaos.state import table_rows

pytestmark = pytest.mark.chaos


def _dataset_obsids(root: Path) -> set[str]:
    from tasks.dataset import open_dataset

    dataset = open_dataset(str(root))
    return {o for split in ("train", "val", "test") for o in dataset.read_metadata(split).column("obsid").to_pylist()}


def _rewrite_table(root: Path, name: str, table: pa.Table) -> None:
    """Replace a table's content as a buggy writer would: consistent manifest, any schema."""
    TableStore(DataLayout(str(root)).tables).write(name, table)


def test_bad_images_in_the_store_are_quarantined_not_trained_on(pipeline_reference, stage_root, chaos_figures):
    root = stage_root(pipeline_reference.after["summarize"])
    store = ImageStore(DataLayout(str(root)).images)
    rows = table_rows(root, "previews")
    in_dataset = _dataset_obsids(pipeline_reference.after["dataset"])
    ok = sorted((r for r in rows if r["status"] == "ok" and r["obsid"] in in_dataset), key=lambda r: r["obsid"])
    corrupt, truncated, empty = ok[0], ok[1], ok[2]
    Path(store.path(corrupt["sha256"])).write_bytes(b"\xff\xd8 not the stored bytes")  # bit rot
    whole = store.get(truncated["sha256"])
    repointed = {truncated["obsid"]: store.put(whole[: len(whole) // 3]), empty["obsid"]: store.put(b"")}
    for row in rows:
        if row["obsid"] in repointed:
            row["sha256"] = repointed[row["obsid"]]
    _rewrite_table(root, "previews", pa.Table.from_pylist(rows, schema=PREVIEWS_SCHEMA))

    run_stage_inline("dataset", root)
    quarantine = {(r["record_id"], r["reason"]) for r in table_rows(root, "quarantine") if r["stage"] == "build_dataset"}
    assert (corrupt["obsid"], "corrupt_image") in quarantine
    assert (truncated["obsid"], "unreadable_image") in quarantine
    assert (empty["obsid"], "unreadable_image") in quarantine
    expected = _dataset_obsids(pipeline_reference.after["dataset"]) - {corrupt["obsid"], truncated["obsid"],
                                                                       empty["obsid"]}
    assert _dataset_obsids(root) == expected  # the rest, all of it
    chaos_figures.bad_inputs += ["image store file that does not hash to its key", "truncated JPEG in the store",
                                 "zero-byte JPEG in the store"]


def test_a_table_with_a_wrong_schema_is_a_clear_error(pipeline_reference, stage_root, chaos_figures):
    root = stage_root(pipeline_reference.after["summarize"])
    _rewrite_table(root, "summaries", pa.table({"proposal_id": ["1"], "text": ["not a summaries table"]}))
    with pytest.raises(InputError, match="summaries"):
        run_stage_inline("dataset", root)
    chaos_figures.bad_inputs.append("Parquet table file with a wrong schema")


def test_a_table_file_that_does_not_match_its_manifest_is_refused(pipeline_reference, stage_root):
    root = stage_root(pipeline_reference.after["summarize"])
    tables = TableStore(DataLayout(str(root)).tables)
    entry = tables.manifest("proposals").files[0]
    path = Path(tables.table_dir("proposals")) / entry.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="does not match its manifest hash"):
        run_stage_inline("dataset", root)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _dataset_dir(root: Path) -> Path:
    return root / "datasets" / (root / "datasets" / "latest").read_text().strip()


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_dataset_whose_files_do_not_match_its_manifest_is_refused(split, pipeline_reference, stage_root,
                                                                     chaos_figures):
    from tasks.dataset import open_dataset

    root = stage_root(pipeline_reference.after["train"])
    (shard,) = sorted((_dataset_dir(root) / split).glob("*.parquet"))
    _flip_a_byte(shard)
    with pytest.raises(InputError, match="does not match its manifest"):
        open_dataset(str(root))
    # Every stage that reads the dataset refuses it, naming the shard: training and evaluation.
    for finished in root.glob("runs/*/manifest.json"):
        shutil.rmtree(finished.parent)  # a finished run would be a cache hit that reads nothing
    with pytest.raises(InputError, match=shard.name):
        run_stage_inline("train", root)
    chaos_figures.bad_inputs.append("dataset shard that does not match its manifest hash")


def test_evaluation_refuses_a_tampered_dataset(pipeline_reference, stage_root):
    root = stage_root(pipeline_reference.after["train"])
    (shard,) = sorted((_dataset_dir(root) / "test").glob("*.parquet"))
    _flip_a_byte(shard)
    with pytest.raises(InputError, match=shard.name):
        run_stage_inline("evaluate", root)


def test_a_dataset_shard_with_a_wrong_schema_is_a_clear_error(pipeline_reference, stage_root, chaos_figures):
    """A shard listed, with its true hash, by a consistent manifest (a buggy or foreign writer)."""
    from tasks.dataset.versions import read_manifest, write_manifest

    root = stage_root(pipeline_reference.after["dataset"])
    version_dir = _dataset_dir(root)
    manifest = read_manifest(str(root), version_dir.name)
    (shard,) = sorted((version_dir / "train").glob("*.parquet"))
    relative = str(shard.relative_to(version_dir))
    rows = next(f.rows for f in manifest.files if f.path == relative)
    sink = io.BytesIO()  # as many rows as the manifest says, in another layout
    pq.write_table(pa.table({"obsid": [str(i) for i in range(rows)], "caption": ["wrong layout"] * rows}), sink)
    shard.write_bytes(sink.getvalue())
    files = [FileEntry(path=f.path, rows=f.rows, bytes=len(sink.getvalue()), partition=f.partition,
                       sha256=hashlib.sha256(sink.getvalue()).hexdigest()) if f.path == relative else f
             for f in manifest.files]
    assert files != manifest.files
    write_manifest(str(root), version_dir.name, manifest.model_copy(update={"files": files}))
    with pytest.raises(InputError, match="schema"):
        run_stage_inline("train", root)
    chaos_figures.bad_inputs.append("dataset shard with a wrong schema")


def test_an_edited_dataset_manifest_is_refused(pipeline_reference, stage_root):
    from tasks.dataset import open_dataset

    root = stage_root(pipeline_reference.after["dataset"])
    path = _dataset_dir(root) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][0]["rows"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="edited or corrupted"):
        open_dataset(str(root))


def test_tampered_model_weights_are_refused(pipeline_reference, stage_root, chaos_figures):
    """The weights file is checked against the hash its run recorded before a model is used."""
    root = stage_root(pipeline_reference.after["train"])
    (run_dir,) = [p.parent for p in root.glob("runs/*/manifest.json")]
    weights = next((run_dir / "final").glob("*.bin"))
    shutil.copy(next((run_dir / "base").glob("*.bin")), weights)  # a valid model, not the trained one
    from tasks.evaluate.models import search_model_loader
    from tasks.evaluate.stage import run_evaluate

    with pytest.raises(InputError, match="hash"):  # evaluating again (the cached report used the true one)
        run_evaluate(stage_params("evaluate", root).model_copy(update={"refresh": True}))
    with pytest.raises(InputError, match="hash"):  # the search server's model
        search_model_loader(str(root), run_dir.name, "cpu")
    chaos_figures.bad_inputs.append("model weights that do not match their recorded hash")


# -- the LLM --------------------------------------------------------------------------------------
class _ScriptedBackend:
    """An LLM that answers by script: schema violations, cut-off JSON, plain text, failures."""

    name = "openai"
    model_id = "scripted"
    deterministic = True

    def generate(self, abstracts, sampling):
        from tasks.summarize.backends.base import RawOutput

        out = []
        for text in abstracts:
            if "VIOLATE" in text:  # 9 items, an item of 9 words: the grammar was ignored
                out.append(RawOutput(json.dumps({"objects_and_phenomena": [f"thing {i}" for i in range(9)],
                                                 "science_use_cases": ["one two three four five six seven eight nine"]})))
            elif "EXTRA" in text:
                out.append(RawOutput(json.dumps({"objects_and_phenomena": ["stars"], "science_use_cases": ["ages"],
                                                 "secret_field": "x"})))
            elif "CUTOFF" in text:
                out.append(RawOutput('{"objects_and_phenomena": ["stars", "gal', hit_token_limit=True))
            elif "FAIL" in text:
                out.append(RawOutput("", failure="request_failed", detail="HTTP 500 from the server"))
            elif "PROSE" in text:
                out.append(RawOutput("Sure! Here is a summary of the abstract: stars."))
            else:
                out.append(RawOutput(json.dumps({"objects_and_phenomena": ["globular clusters"],
                                                 "science_use_cases": ["stellar ages"]})))
        return out

    def close(self) -> None:
        pass


def _proposals(root: Path, abstracts: dict[str, str]) -> None:
    from schemas.arrow import PROPOSALS_SCHEMA
    from schemas.records import Proposal
    from storage.tables import table_from_records

    records = [Proposal(proposal_id=pid, cycle=20, source="catalog", title=f"t{pid}", abstract=text)
               for pid, text in abstracts.items()]
    TableStore(DataLayout(str(root)).tables).write("proposals", table_from_records(records, PROPOSALS_SCHEMA))


def test_llm_outputs_that_violate_the_schema_are_quarantined(tmp_path, monkeypatch, chaos_figures):
    from schemas.summary import SummarizeParams
    from tasks.summarize.backends import base
    from tasks.summarize.stage import run_summarize

    monkeypatch.setitem(base.BACKENDS, "openai", lambda params: _ScriptedBackend())
    abstracts = {"101": "We measure globular cluster ages.", "102": "VIOLATE the grammar please.",
                 "103": "EXTRA fields in the answer.", "104": "CUTOFF before the end.", "105": "FAIL on the server."}
    _proposals(tmp_path, abstracts)
    result = run_summarize(SummarizeParams(data=str(tmp_path), backend="openai", model="scripted", max_attempts=2))
    summaries = {r["proposal_id"] for r in table_rows(tmp_path, "summaries")}
    reasons = {r["record_id"]: r["reason"] for r in table_rows(tmp_path, "quarantine")}
    assert summaries == {"101"}
    # Out-of-grammar JSON among good outputs: quarantined under its own reason, the run goes on.
    assert reasons == {"102": "grammar_violation", "103": "grammar_violation", "104": "cut_off",
                       "105": "request_failed"}
    assert result.stats["failed"] == 4

    # Prose instead of JSON means the server ignored the schema altogether: the run stops, by name.
    _proposals(tmp_path, {"201": "PROSE please."})
    from tasks.summarize.generate import UnconstrainedOutputError

    with pytest.raises(UnconstrainedOutputError, match="JSON"):
        run_summarize(SummarizeParams(data=str(tmp_path), backend="openai", model="scripted", max_attempts=2))
    chaos_figures.bad_inputs += ["LLM output violating the schema", "LLM output with extra fields",
                                 "LLM output cut off at the token limit", "LLM server failure",
                                 "LLM prose instead of JSON"]
