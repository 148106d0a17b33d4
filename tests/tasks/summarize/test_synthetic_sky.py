"""Acceptance on the synthetic sky: the extractive backend names a true class for >= 90% of proposals."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from schemas.summary import SummarizeParams
from storage.layout import DataLayout
from storage.tables import TableStore
from tasks.summarize import run_summarize

RECORD_SEPARATOR = re.compile(r"^-{20,}$", re.MULTILINE)


def read_catalog_abstracts(catalog: Path) -> dict[str, str]:
    """Abstracts of STScI's flat-file catalog format (the sky writes one): ID -> abstract text."""
    abstracts = {}
    for record in RECORD_SEPARATOR.split(catalog.read_text(encoding="utf-8")):
        found = re.search(r"^ID:\s*(\d+)", record, re.MULTILINE)
        if found:
            header_and_body = record.strip("\n").split("\n\n", 1)
            abstracts[found.group(1)] = " ".join(header_and_body[1].split()) if len(header_and_body) == 2 else ""
    return abstracts


@pytest.fixture(scope="module")
def sky(tmp_path_factory) -> Path:
    from tasks.archive.sky import generate_sky

    root = tmp_path_factory.mktemp("sky")
    # One image per proposal: this test reads text only, and rendering is the slow part.
    generate_sky(root, proposals=150, seed=11, mean_observations=1.0, max_observations=1, two_class_fraction=0.3)
    return root


def test_extractive_summaries_name_a_true_class_for_90_percent(sky, tmp_path, write_proposals):
    truth = json.loads((sky / "ground_truth.json").read_text(encoding="utf-8"))["proposals"]
    abstracts = read_catalog_abstracts(sky / "stsci" / "catalog.txt")
    assert set(abstracts) == set(truth)
    data = write_proposals(str(tmp_path), sorted(abstracts.items()))
    result = run_summarize(SummarizeParams(data=data))
    rows = TableStore(DataLayout(data).tables).read("summaries").to_pylist()
    with_text = [pid for pid, text in abstracts.items() if text.strip()]
    assert len(rows) == len(with_text) == result.stats["summaries"]  # the planted empty abstract is quarantined
    named = [r for r in rows if set(r["objects_and_phenomena"]) & set(truth[r["proposal_id"]]["classes"])]
    rate = len(named) / len(with_text)
    assert rate >= 0.90, f"only {rate:.1%} of proposals get one of their true classes"
    assert result.stats["truncation_rate"] == 0.0
