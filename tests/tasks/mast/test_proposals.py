"""Source preference (catalog > APT > .pro), the document cache, and failure reasons."""

from __future__ import annotations

import pytest

from schemas.errors import PermanentRemoteError, RemoteError
from schemas.records import Proposal
from tasks.mast.http import status_error
from tasks.mast.proposals import DocumentCache, ProposalFailure, ProposalFetcher, apt_url, pro_url

BASE = "http://stsci.test"


def _apt(pid: str, cycle: int = 21, abstract: str = "From the APT.") -> bytes:
    return (f'<HSTProposal Phase2ID="{pid}"><ProposalInformation Category="GO" Cycle="{cycle}">'
            f"<Title>T</Title><Abstract>{abstract}</Abstract>"
            '<PrincipalInvestigator FirstName="A" LastName="B"/></ProposalInformation></HSTProposal>').encode()


def _pro(pid: str) -> bytes:
    return (f"HUBBLE SPACE TELESCOPE OBSERVING PROGRAM {pid}\n\nTitle\nT\n-----\nType   Cycle\nGO     22\n-----\n"
            "PI: Dr. A B     Somewhere\n-----\nAbstract\n\nFrom the pro.\n-----\n").encode("latin-1")


class FakeDocuments:
    """Stands in for DocumentClient: answers from a dict, an HTTP status from `statuses` (as the
    client raises it once its retries are spent), 404 otherwise, and counts requests."""

    def __init__(self, documents: dict[str, bytes], statuses: dict[str, int] | None = None):
        self.documents = documents
        self.statuses = statuses or {}
        self.requests: list[str] = []

    def get(self, url: str) -> bytes:
        self.requests.append(url)
        if url in self.statuses:
            raise status_error(self.statuses[url], f"GET {url}")
        if url not in self.documents:
            err = PermanentRemoteError(f"GET {url}: HTTP 404")
            err.status_code = 404
            raise err
        return self.documents[url]


def _fetcher(tmp_path, documents, catalog=None, statuses=None, **kw) -> tuple[ProposalFetcher, FakeDocuments]:
    client = FakeDocuments(documents, statuses)
    return ProposalFetcher(client, DocumentCache(str(tmp_path / "cache")), BASE, catalog=catalog or {}, **kw), client


def test_catalog_beats_apt_beats_pro(tmp_path):
    docs = {apt_url(BASE, "1"): _apt("1"), pro_url(BASE, "1"): _pro("1"), pro_url(BASE, "2"): _pro("2")}
    catalog = {"3": Proposal(proposal_id="3", cycle=20, abstract="From the catalog.", source="catalog")}
    fetcher, client = _fetcher(tmp_path, docs, catalog)
    assert fetcher.fetch("3").source == "catalog" and not client.requests
    assert fetcher.fetch("1").source == "apt"
    second = fetcher.fetch("2")
    assert (second.source, second.cycle, second.pi, second.abstract) == ("pro", 22, "A B", "From the pro.")


def test_documents_and_404s_are_fetched_once(tmp_path):
    docs = {apt_url(BASE, "1"): _apt("1")}
    fetcher, client = _fetcher(tmp_path, docs)
    fetcher.fetch("1"), fetcher.fetch("9")
    fetcher2, client2 = _fetcher(tmp_path, docs)  # a rerun over the same cache
    assert fetcher2.fetch("1").source == "apt" and isinstance(fetcher2.fetch("9"), ProposalFailure)
    assert client2.requests == []
    refetcher, client3 = _fetcher(tmp_path, docs, refetch=True)  # rebuild / retry-failed read through
    refetcher.fetch("9")
    assert len(client3.requests) == 2


def test_failures_name_the_most_telling_reason(tmp_path):
    docs = {apt_url(BASE, "1"): _apt("1", abstract=""), apt_url(BASE, "2"): b"<HSTProposal><broken",
            apt_url(BASE, "4"): _apt("5")}
    catalog = {"1": Proposal(proposal_id="1", cycle=20, abstract="", source="catalog")}
    fetcher, _ = _fetcher(tmp_path, docs, catalog)
    empty, broken, missing, mismatch = (fetcher.fetch(pid) for pid in ("1", "2", "3", "4"))
    assert (empty.reason, broken.reason, missing.reason, mismatch.reason) == (
        "empty_abstract", "malformed_xml", "no_proposal_document", "proposal_id_mismatch")
    assert "catalog: empty abstract" in empty.detail and "pro: not found" in empty.detail


def test_a_refused_document_moves_on_to_the_next_source(tmp_path):
    # 403/401/400 are answers about one document, not the run: the .pro is tried, and a proposal
    # whose every source refuses is a failure with the reasons, never an exception for the batch.
    docs = {pro_url(BASE, "1"): _pro("1")}
    statuses = {apt_url(BASE, "1"): 403, apt_url(BASE, "2"): 401, pro_url(BASE, "2"): 400}
    fetcher, _ = _fetcher(tmp_path, docs, statuses=statuses)
    good, bad = fetcher.fetch_many(["1", "2", "3"])
    assert [p.source for p in good] == ["pro"]
    assert [(f.proposal_id, f.reason, f.transient) for f in bad] == [
        ("2", "http_401", False), ("3", "no_proposal_document", False)]
    assert "apt: GET" in bad[0].detail and "HTTP 401" in bad[0].detail and "HTTP 400" in bad[0].detail


def test_server_trouble_fails_one_proposal_unless_it_is_the_whole_batch(tmp_path):
    # APT answering 503 past its retries: that proposal is a transient failure (quarantined, tried
    # again by the next run; its .pro not used meanwhile); a batch where every proposal fails so fails.
    docs = {apt_url(BASE, "2"): _apt("2"), pro_url(BASE, "1"): _pro("1")}
    statuses = {apt_url(BASE, "1"): 503, apt_url(BASE, "3"): 500}
    fetcher, client = _fetcher(tmp_path, docs, statuses=statuses)
    good, bad = fetcher.fetch_many(["1", "2"])
    assert [p.proposal_id for p in good] == ["2"]
    assert [(f.proposal_id, f.reason, f.transient) for f in bad] == [("1", "http_503", True)]
    assert pro_url(BASE, "1") not in client.requests
    with pytest.raises(RemoteError, match="every proposal of the batch"):
        fetcher.fetch_many(["1", "3"])
    client.statuses.clear()  # the server is back (APT now 404s): nothing of the trouble was cached
    assert fetcher.fetch("1").source == "pro"


def test_a_batch_of_one_that_meets_server_trouble_is_a_failure_not_an_error(tmp_path):
    # The last batch of a run may hold one proposal: its outage says nothing about the archive,
    # and raising would stop every run. It is a transient failure, tried again by the next run.
    fetcher, _ = _fetcher(tmp_path, {}, statuses={apt_url(BASE, "1"): 500})
    good, bad = fetcher.fetch_many(["1"])
    assert good == [] and [(f.proposal_id, f.reason, f.transient) for f in bad] == [("1", "http_500", True)]
