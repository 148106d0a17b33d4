"""Proposal records from STScI documents: catalog flat file, then APT XML, then `.pro`.

Sources in order of preference: the proposal abstracts catalog flat file (when one is
configured: one download gives every proposal), the Phase II APT XML, the Phase II `.pro`
report. A proposal whose sources all fail is returned as a failure (quarantined by the stage)
with each source's reason; a definitive refusal (403, 401, 400...) moves on to the next source
like a 404 does. A source that keeps failing with server trouble after its retries (5xx,
timeouts, bodies cut short) ends the proposal as a `transient` failure: quarantined under its
`http_<status>` / `http_error` reason, fetched again by the next run (no --retry-failed needed),
and never answered from a lesser source meanwhile (a passing outage must not decide which
document a proposal's text comes from). Only when every proposal of a batch of two or more fails
so is the archive taken to be down: the batch fails (and is retried) instead. A batch of one says
nothing about the archive (a last batch of one would stop every run).

Raw documents are cached under `cache/documents/` in the data root, keyed by the sha256 of
their URL, and a 404 is remembered as a `.missing` marker: a rerun (after a kill, or a refresh)
never fetches a document twice. `refetch=True` (rebuild, retry-failed) reads through the cache.
All fetches share one rate limit and the project's User-Agent (`DocumentClient`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from schemas.errors import PermanentRemoteError, RemoteError
from schemas.records import Proposal
from storage.fs import atomic_write_bytes, exists, join, read_bytes
from tasks.mast.http import MIN_BATCH_TO_JUDGE_ARCHIVE, DocumentClient
from tasks.mast.parsers import ParseError, parse_catalog, parse_document

log = logging.getLogger(__name__)

APT_PATH = "/hst-program-info/download/hst/apt/{id}/"
PRO_PATH = "/hst/phase2-public/{id}.pro"
MISSING = b""
# Which reason names a failure when several sources failed: a parse problem beats a refusal
# (the document exists, we may not read it) beats "not found" beats the rest.
REASON_ORDER = ("unsafe_xml", "malformed_xml", "empty_abstract", "missing_cycle", "invalid_proposal",
                "proposal_id_mismatch", "http_", "no_proposal_document")


def apt_url(stsci_url: str, proposal_id: str) -> str:
    return stsci_url.rstrip("/") + APT_PATH.format(id=proposal_id)


def pro_url(stsci_url: str, proposal_id: str) -> str:
    return stsci_url.rstrip("/") + PRO_PATH.format(id=proposal_id)


@dataclass
class ProposalFailure:
    proposal_id: str
    reason: str
    detail: str
    transient: bool = False  # a server kept failing (retries exhausted): a later try may succeed


def http_reason(err: BaseException) -> str:
    """`http_<status>` for an HTTP answer, `http_error` for a timeout or a body cut short."""
    status = getattr(err, "status_code", 0)
    return f"http_{status}" if status else "http_error"


def _rank(reason: str) -> int:
    key = "http_" if reason.startswith("http_") else reason
    return REASON_ORDER.index(key) if key in REASON_ORDER else len(REASON_ORDER)


@dataclass
class DocumentCache:
    """Raw documents by URL hash under `root`; `None` means "never fetched", b"" means 404."""

    root: str

    def _path(self, url: str) -> str:
        digest = hashlib.sha256(url.encode()).hexdigest()
        return join(self.root, digest[:2], digest)

    def get(self, url: str) -> bytes | None:
        path = self._path(url)
        if exists(path):
            return read_bytes(path)
        if exists(path + ".missing"):
            return MISSING
        return None

    def put(self, url: str, data: bytes) -> None:
        atomic_write_bytes(self._path(url), data)

    def put_missing(self, url: str) -> None:
        atomic_write_bytes(self._path(url) + ".missing", url.encode())


@dataclass
class ProposalFetcher:
    client: DocumentClient
    cache: DocumentCache
    stsci_url: str
    catalog: Mapping[str, Proposal] = field(default_factory=dict)
    catalog_failures: Mapping[str, ProposalFailure] = field(default_factory=dict)
    refetch: bool = False

    def document(self, url: str) -> bytes:
        """The body of `url` (cached); b"" when the server says it does not exist."""
        if not self.refetch:
            cached = self.cache.get(url)
            if cached is not None:
                return cached
        try:
            data = self.client.get(url)
        except PermanentRemoteError as err:
            if getattr(err, "status_code", 0) in (404, 410):
                self.cache.put_missing(url)
                return MISSING
            raise
        self.cache.put(url, data)
        return data

    def fetch(self, proposal_id: str) -> Proposal | ProposalFailure:
        """The best record for one proposal, or why there is none."""
        reasons: list[tuple[str, str]] = []
        from_catalog = self.catalog.get(proposal_id)
        if from_catalog is not None:
            if from_catalog.abstract:
                return from_catalog
            reasons.append(("empty_abstract", "catalog: empty abstract"))
        elif proposal_id in self.catalog_failures:
            failed = self.catalog_failures[proposal_id]
            reasons.append((failed.reason, failed.detail))
        for kind, url in (("apt", apt_url(self.stsci_url, proposal_id)), ("pro", pro_url(self.stsci_url, proposal_id))):
            try:
                data = self.document(url)
            except PermanentRemoteError as err:
                reasons.append((http_reason(err), f"{kind}: {err}"))
                continue
            except RemoteError as err:
                reasons.append((http_reason(err), f"{kind}: {err}"))
                return ProposalFailure(proposal_id, http_reason(err), "; ".join(d for _, d in reasons), transient=True)
            if data == MISSING:
                reasons.append(("no_proposal_document", f"{kind}: not found ({urlsplit(url).path})"))
                continue
            try:
                proposal = parse_document(data, kind)
            except ParseError as err:
                reasons.append((err.reason, f"{kind}: {err}"))
                continue
            if proposal.proposal_id != proposal_id:
                reasons.append(("proposal_id_mismatch", f"{kind}: document is for {proposal.proposal_id}"))
                continue
            return proposal
        reason = min((r for r, _ in reasons), key=_rank)
        return ProposalFailure(proposal_id, reason, "; ".join(d for _, d in reasons))

    def fetch_many(self, proposal_ids: Sequence[str]) -> tuple[list[Proposal], list[ProposalFailure]]:
        good: list[Proposal] = []
        bad: list[ProposalFailure] = []
        for proposal_id in proposal_ids:
            outcome = self.fetch(proposal_id)
            (good if isinstance(outcome, Proposal) else bad).append(outcome)  # type: ignore[arg-type]
        if (len(proposal_ids) >= MIN_BATCH_TO_JUDGE_ARCHIVE and len(bad) == len(proposal_ids)
                and all(f.transient for f in bad)):
            # Every one failed on server trouble: the archive is down, not these proposals bad.
            raise RemoteError(f"every proposal of the batch failed on server trouble, e.g. {bad[-1].detail}")
        return good, bad


def load_catalog(client: DocumentClient, url: str) -> tuple[dict[str, Proposal], list[ProposalFailure]]:
    """Fetch and parse the catalog flat file (once per run: it grows every cycle)."""
    records, failures = parse_catalog(client.get(url))
    catalog = {r.proposal_id: r for r in records}
    return catalog, [ProposalFailure(ident, err.reason, f"catalog: {err}") for ident, err in failures]
