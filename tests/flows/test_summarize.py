"""The `summarize` flow and the `hubbleclip summarize` / `summarize-text` commands."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from flows.summarize import summarize
from schemas.arrow import PROPOSALS_SCHEMA
from schemas.records import Proposal
from schemas.summary import SummarizeParams, Summary
from storage.layout import DataLayout
from storage.tables import TableStore, table_from_records

ABSTRACTS = [
    ("201", "We propose to image globular clusters to measure their absolute ages."),
    ("202", "Weak gravitational lensing by galaxy clusters maps the distribution of dark matter."),
    ("203", "   "),
]


def _run(argv: list[str]) -> int:
    """The CLI's exit status (typer exits through SystemExit, 0 included)."""
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _data(tmp_path) -> str:
    records = [Proposal(proposal_id=pid, cycle=25, abstract=a, source="apt") for pid, a in ABSTRACTS]
    TableStore(DataLayout(str(tmp_path)).tables).write("proposals", table_from_records(records, PROPOSALS_SCHEMA))
    return str(tmp_path)


def test_flow_writes_summaries_publishes_an_artifact_and_is_cached(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    params = SummarizeParams(data=_data(tmp_path))
    first = summarize(params)
    assert (first.stats["summaries"], first.stats["failed"]) == (2, 1) and not first.cached
    rows = TableStore(DataLayout(params.data).tables).read("summaries").to_pylist()
    assert {r["proposal_id"] for r in rows} == {"201", "202"}
    with get_client(sync_client=True) as client:
        # The newest one: other tests in this session's Prefect may have summarized too.
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["summarize-stats"])),
                                          sort=ArtifactSort.CREATED_DESC, limit=1)
    table = json.loads(artifacts[0].data)
    metrics = {row["metric"]: row["value"] for row in table}
    assert metrics["summaries"] == 2 and "abstracts/s" in metrics and metrics["invalid JSON rate"] == 0.0
    again = summarize(params)
    assert again.cached and again.digest == first.digest


def test_summarize_command(tmp_path, capsys):
    data = _data(tmp_path)
    assert _run(["summarize", "--data", data, "--backend", "extractive", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stage"] == "summarize" and result["stats"]["summaries"] == 2
    assert _run(["summarize", "--data", data]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_summarize_text_prints_one_summary_per_line_in_order(monkeypatch, capsys):
    import io

    lines = "Dwarf galaxies and their dark matter.\n\nWe study quasars with spectroscopy.\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert _run(["summarize-text", "--backend", "extractive"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3
    first, blank, third = (json.loads(line) for line in out)
    assert "dwarf galaxies" in Summary.model_validate(first).objects_and_phenomena
    assert blank["error"] == "empty_abstract"
    assert Summary.model_validate(third).objects_and_phenomena == ["quasars"]


@pytest.mark.parametrize(("argv", "message"), [
    (["summarize-text", "--backend", "gpt5"], "unknown summarizer backend 'gpt5'"),
    (["summarize-text", "--max-words", "0"], "--max-words: Input should be greater than or equal to 1"),
    (["summarize", "--data", "/nonexistent/hubbleclip"], "table 'proposals' does not exist"),
])
def test_command_errors_are_one_line(argv, message, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("x\n"))
    assert _run(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hubbleclip: error: ") and message in err and "\n" not in err
