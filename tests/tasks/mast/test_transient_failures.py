"""Server trouble is not a verdict: the next plain run tries again; a definitive answer waits for
--retry-failed. Steps over a data root, with fake document and preview servers."""

from __future__ import annotations

from schemas.arrow import OBSERVATIONS_SCHEMA
from schemas.ingest import IngestParams, PreviewPolicy
from schemas.records import Observation
from schemas.settings import get_settings
from storage.tables import table_from_records
from tasks.mast import steps
from tasks.mast.http import server_trouble, status_error
from tasks.mast.imaging import ImageSpec
from tasks.mast.observations import Window
from tasks.mast.previews import PreviewFetcher
from tests.tasks.mast.conftest import encoded_image
from tests.tasks.mast.test_proposals import BASE, FakeDocuments, _apt

POLICY = PreviewPolicy(include=[], exclude=[])
# Proposal 100: its APT document and preview 1 meet an outage. Proposal 300: no document at all
# (404, definitive), and preview 3 is gone (404). Previews 2 and 4 are fine.
PREVIEWS = {"1": "100", "2": "100", "3": "300", "4": "300"}


def _url(obsid: str) -> str:
    return f"https://archive.test/previews/{obsid}_total.jpg"


class _Mast:
    backoff_s = 0.0


def _context(root, documents: FakeDocuments, **params) -> steps.IngestContext:
    ctx = steps.IngestContext(IngestParams(data=str(root), stsci_url=BASE, catalog_url="", preview_policy=POLICY,
                                           **params), get_settings())
    ctx.documents = documents
    return ctx


def _fetcher(ctx: steps.IngestContext, statuses: dict[str, int]) -> tuple[PreviewFetcher, list[str]]:
    fetcher = PreviewFetcher(_Mast(), ctx.images, ctx.journal, ImageSpec(size=32), POLICY, attempts=1)
    asked: list[str] = []

    def download(url: str, part_path: str) -> bytes:
        asked.append(url)
        if url in statuses:
            raise status_error(statuses[url], f"download {url}")  # as the client raises it past its retries
        return encoded_image((64, 48), (20, 90, 200))

    fetcher.download = download
    return fetcher, asked


def _run(ctx: steps.IngestContext, scope: list[str], preview_statuses: dict[str, int]) -> tuple[list[str], list[str]]:
    """Proposals then previews of `scope`, as run_ingest does; returns (targets, downloads)."""
    targets = steps.proposal_targets(ctx, scope)
    good, bad = steps.fetch_proposals(ctx, targets)
    steps.commit_proposals(ctx, good, bad)
    jobs, decided = steps.plan_preview_jobs(ctx, scope)
    steps.commit_previews(ctx, decided)
    fetcher, asked = _fetcher(ctx, preview_statuses)
    steps.commit_previews(ctx, fetcher.run_batch(jobs) if jobs else [])
    return targets, asked


def _plain_run_scope(ctx: steps.IngestContext) -> list[str]:
    """The scope of a window run whose window brought nothing new (the weekly refresh after it)."""
    return steps.commit_observations(ctx, steps.Selection(Window(60000.0, 60007.0), complete=True), []).scope


def test_transient_failures_are_reattempted_by_the_next_plain_run(tmp_path):
    root = tmp_path / "data"
    outage = FakeDocuments({}, statuses={"http://stsci.test/hst-program-info/download/hst/apt/100/": 503})
    ctx = _context(root, outage)
    observations = [Observation(obsid=o, obs_id=f"o{o}", proposal_id=pid, jpeg_url=_url(o), t_obs_release=59000.0)
                    for o, pid in PREVIEWS.items()]
    ctx.tables.upsert("observations", table_from_records(observations, OBSERVATIONS_SCHEMA), key="obsid")
    _run(ctx, ["100", "300"], {_url("1"): 503, _url("3"): 404})

    quarantined = {(r["record_id"], r["reason"]) for r in ctx.rows("quarantine")}
    assert quarantined == {("proposal/100", "http_503"), ("proposal/300", "no_proposal_document"),
                           ("preview/1", "http_503"), ("preview/3", "http_404")}
    assert [server_trouble(reason) for reason in ("http_503", "http_error", "http_429", "http_404",
                                                  "no_proposal_document")] == [True, True, True, False, False]

    # The next plain run: the servers are back. Only what failed on server trouble is tried again,
    # though the window holds none of those releases.
    recovered = FakeDocuments({"http://stsci.test/hst-program-info/download/hst/apt/100/": _apt("100")})
    ctx = _context(root, recovered)
    scope = _plain_run_scope(ctx)
    assert scope == ["100"]
    targets, asked = _run(ctx, scope, {})
    assert targets == ["100"] and asked == [_url("1")]
    assert {r["proposal_id"] for r in ctx.rows("proposals")} == {"100"}
    previews = {r["obsid"]: r["status"] for r in ctx.rows("previews")}
    assert previews == {"1": "ok", "2": "ok", "3": "http_error", "4": "ok"}

    # Definitive failures wait for --retry-failed even when named; nothing troubled is left.
    ctx = _context(root, FakeDocuments({}))
    assert _run(ctx, ["100", "300"], {}) == ([], [])
    assert _plain_run_scope(ctx) == []
    ctx = _context(root, FakeDocuments({}), retry_failed=True)
    assert steps.proposal_targets(ctx, ["300"]) == ["300"]
    assert [j.obsid for j in steps.plan_preview_jobs(ctx, ["300"])[0]] == ["3"]


def test_a_proposal_that_also_failed_definitively_waits_for_retry_failed(tmp_path):
    ctx = _context(tmp_path / "data", FakeDocuments({}))
    steps.quarantine(ctx, [steps._q("proposal/100", "http_403", "apt: HTTP 403"),
                           steps._q("proposal/100", "http_error", "apt: ReadTimeout"),
                           steps._q("proposal/200", "http_error", "apt: ReadTimeout")])
    assert steps.definitively_failed_proposals(ctx) == {"100"}
    assert steps.proposal_targets(ctx, ["100", "200"]) == ["200"]

