"""Fixtures for the summarize tests: real abstracts from the seed document, proposals tables."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from schemas.arrow import PROPOSALS_SCHEMA
from schemas.records import Proposal
from storage.layout import DataLayout
from storage.tables import TableStore, table_from_records


@pytest.fixture(scope="session")
def figure3_abstracts(shared_dir: Path) -> list[str]:
    """The five real abstracts of the seed paper's Figure 3, category prefix removed."""
    text = (shared_dir / "reference" / "seed-paper-skeleton.txt").read_text(encoding="utf-8")
    abstracts = [re.sub(r"^Category: [^.]*\.\s*", "", a) for a in re.findall(r"<p>(.*?)</p>", text, re.S)]
    assert len(abstracts) == 5
    return abstracts


@pytest.fixture(scope="session")
def apt_abstract(shared_dir: Path) -> str:
    """The abstract of the real APT file of program 13012 (Uranus aurorae)."""
    text = (shared_dir / "fixtures" / "proposals" / "13012_phase2.apt").read_text(encoding="utf-8")
    return re.search(r"<Abstract>(.*?)</Abstract>", text, re.S).group(1)


WriteProposals = Callable[[str, Sequence[tuple[str, str]]], str]


@pytest.fixture
def write_proposals() -> WriteProposals:
    """Write a `proposals` table of (proposal_id, abstract) under a data root, as ingest would."""

    def write(data: str, rows: Sequence[tuple[str, str]]) -> str:
        records = [Proposal(proposal_id=pid, cycle=20, category="GALAXIES", title=f"Program {pid}", pi="A. Person",
                            abstract=abstract, source="apt") for pid, abstract in rows]
        TableStore(DataLayout(data).tables).write("proposals", table_from_records(records, PROPOSALS_SCHEMA))
        return data

    return write


@pytest.fixture
def one_torch_thread():
    """The tiny model is ~15x faster on one thread when the CPUs are shared (no spin-waiting)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
