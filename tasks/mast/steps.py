"""The ingest stage as steps over one `IngestContext`: run_ingest and the Prefect flow share them.

Commit points (what a kill -9 can interrupt, and why a rerun ends with the same tables):
1. observations: one upsert after every window is queried. A kill before it loses only
   metadata queries, which the rerun repeats (nothing stored is fetched again).
2. proposals: each raw document is cached in the data root the moment it arrives; the tables
   commit once. A rerun re-parses cached documents instead of fetching them.
3. previews: each outcome is journaled as soon as its image is in the store; the tables commit
   every few batches (quarantine first, then previews, then the journal entries are cleared).
   A rerun folds the journal first, then plans only what is not recorded. Quarantine rows are
   added only when their (record_id, stage, reason) is new, so a replayed commit adds nothing.
4. the watermark, last.
The selection and the sample are pure functions of stored state, so the rerun plans exactly the
work the killed run had left.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from schemas.arrow import OBSERVATIONS_SCHEMA, PREVIEWS_SCHEMA, PROPOSALS_SCHEMA, QUARANTINE_SCHEMA
from schemas.errors import InputError
from schemas.ingest import IngestParams
from schemas.records import Observation, PreviewImage, Proposal, QuarantineRecord
from schemas.settings import Settings
from storage import DataLayout, ImageStore, TableStore
from storage.fs import join
from storage.tables import table_from_records
from tasks.mast import observations as caom
from tasks.mast.http import DocumentClient, MastClient, server_trouble
from tasks.mast.imaging import ImageSpec
from tasks.mast.journal import PreviewJournal
from tasks.mast.observations import QuerySpec, Window
from tasks.mast.previews import (
    FAILED,
    PreviewFetcher,
    PreviewJob,
    failed_transiently,
    plan_previews,
    quarantine_reason,
)
from tasks.mast.proposals import DocumentCache, ProposalFailure, ProposalFetcher, load_catalog
from tasks.mast.watermark import Watermark, advance, now_mjd, read_watermark, write_watermark

log = logging.getLogger(__name__)

STAGE = "ingest"
TABLES = ("observations", "proposals", "previews", "quarantine")


def effective_settings(params: IngestParams, settings: Settings) -> Settings:
    """Settings with this run's overrides (data root and server URLs) applied."""
    updates: dict[str, Any] = {"data": params.data}
    for name in ("mast_url", "stsci_url", "catalog_url"):
        value = getattr(params, name)
        if value is not None:
            updates[name] = value.rstrip("/")
    return settings.model_copy(update=updates)


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Selection:
    """What this run asks MAST for."""

    window: Window
    proposal_ids: tuple[str, ...] = ()
    query: bool = True  # False: retry-failed only, no new query
    complete: bool = False  # True: every public science image released in `window` is asked for
    full: bool = False  # True: the whole archive (a rebuild may replace the tables)


@dataclass
class IngestContext:
    params: IngestParams
    settings: Settings
    layout: DataLayout = field(init=False)
    tables: TableStore = field(init=False)
    images: ImageStore = field(init=False)
    journal: PreviewJournal = field(init=False)
    documents: DocumentClient = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stats: Counter = field(default_factory=Counter)
    _mast: MastClient | None = None
    _catalog: tuple[dict[str, Proposal], list[ProposalFailure]] | None = None
    _catalog_lock: threading.Lock = field(default_factory=threading.Lock)
    _quarantined: set[tuple[str, str, str]] | None = None

    def __post_init__(self) -> None:
        self.settings = effective_settings(self.params, self.settings)
        self.layout = DataLayout(self.settings.data)
        self.tables = TableStore(self.layout.tables)
        self.images = ImageStore(self.layout.images)
        self.journal = PreviewJournal(self.layout.state, config_digest(self.params.preview_config()))
        self.documents = DocumentClient(self.settings, backoff_s=self.params.retry_backoff_s)

    @property
    def mast(self) -> MastClient:
        if self._mast is None:  # configuring astroquery binds the process to one MAST server
            self._mast = MastClient(self.settings, backoff_s=self.params.retry_backoff_s)
        return self._mast

    @property
    def attempts(self) -> int:
        return self.settings.http_retries + 1

    def catalog(self) -> tuple[dict[str, Proposal], list[ProposalFailure]]:
        """The catalog flat file, fetched at most once per run (threads share it)."""
        with self._catalog_lock:
            if self._catalog is None:
                url = self.settings.catalog_url
                self._catalog = load_catalog(self.documents, url) if url else ({}, [])
            return self._catalog

    def rows(self, name: str) -> list[dict[str, Any]]:
        return self.tables.read_rows(name)


# -- quarantine ----------------------------------------------------------------------------------
def quarantine(ctx: IngestContext, records: Iterable[QuarantineRecord]) -> int:
    """Append the records whose (record_id, stage, reason) is new; returns how many."""
    records = list(records)
    if not records:
        return 0
    with ctx.lock:
        known = _quarantined_keys(ctx)
        fresh: dict[tuple[str, str, str], QuarantineRecord] = {}
        for rec in records:
            key = (rec.record_id, rec.stage, rec.reason)
            if key not in known:
                fresh.setdefault(key, rec)
        if fresh:
            ctx.tables.append("quarantine", table_from_records(fresh.values(), QUARANTINE_SCHEMA))
            known |= set(fresh)
    ctx.stats["quarantined"] += len(fresh)
    return len(fresh)


def _quarantined_keys(ctx: IngestContext) -> set[tuple[str, str, str]]:
    """(record_id, stage, reason) of every quarantine row; call with ctx.lock held. Read once per
    run: `quarantine` is the table's only writer and adds its appends to this set."""
    if ctx._quarantined is None:
        ctx._quarantined = {(r["record_id"], r["stage"], r["reason"]) for r in ctx.rows("quarantine")}
    return ctx._quarantined


def _q(record_id: str, reason: str, detail: str) -> QuarantineRecord:
    return QuarantineRecord(record_id=record_id, stage=STAGE, reason=reason, detail=detail[:2000])


# -- selection -----------------------------------------------------------------------------------
def resolve_selection(ctx: IngestContext) -> Selection:
    p = ctx.params
    until = p.until_mjd if p.until_mjd is not None else now_mjd()
    explicit = p.since_mjd is not None or p.cycles or p.proposal_ids or p.refresh
    if p.retry_failed and not explicit:
        return Selection(Window(0.0, until), query=False)
    if p.cycles:
        return Selection(Window(p.since_mjd or 0.0, until), proposal_ids=tuple(proposal_ids_for_cycles(ctx)))
    if p.proposal_ids:
        return Selection(Window(p.since_mjd or 0.0, until), proposal_ids=tuple(p.proposal_ids))
    since = p.since_mjd
    if since is None and not p.rebuild:
        mark = read_watermark(ctx.layout)
        if mark is None and p.refresh:
            raise InputError(f"no ingest watermark under {ctx.layout.state}: run `hubbleclip ingest` first "
                             "(a full ingest sets it; a --since window, --cycles or --proposals alone do not, "
                             "since releases before them were never asked for)")
        if mark is not None:
            since = max(0.0, mark.t_obs_release - p.overlap_days)
    start = since or 0.0
    selection = Selection(Window(start, until), complete=p.max_proposals is None,
                          full=start == 0.0 and p.until_mjd is None and p.max_proposals is None)
    if selection.complete and p.since_mjd:
        # finish() continues the watermark from an explicit window: a damaged one fails now, not
        # after the work (a window from the watermark has just read it).
        read_watermark(ctx.layout)
    return selection


def proposal_ids_for_cycles(ctx: IngestContext) -> list[str]:
    """Proposal ids of the wanted cycles, from the proposal store (and the catalog, if any).

    The cycle is read from proposal documents, never guessed from the id (ids of neighbouring
    cycles overlap by hundreds).
    """
    wanted = set(ctx.params.cycles)
    ids = {r["proposal_id"] for r in ctx.rows("proposals") if r["cycle"] in wanted}
    catalog, _ = ctx.catalog()
    ids |= {pid for pid, rec in catalog.items() if rec.cycle in wanted}
    if not ids:
        raise InputError(
            f"no proposal of cycle(s) {sorted(wanted)} in the proposal store under {ctx.layout.tables} "
            "(or the catalog): ingest a release window first, or give a catalog URL"
        )
    return sorted(ids, key=int)


# -- observations --------------------------------------------------------------------------------
def plan_queries(ctx: IngestContext, selection: Selection) -> list[tuple[QuerySpec, int]]:
    """Count first; split windows until each query counts at most max_rows_per_query."""
    if not selection.query:
        return []
    pieces: list[tuple[QuerySpec, int]] = []
    for spec in caom.specs_for(selection.window, selection.proposal_ids, ctx.params.calib_levels):
        pieces += caom.plan(ctx.mast, spec, max_rows=ctx.params.max_rows_per_query,
                            min_days=ctx.params.min_window_days, attempts=ctx.attempts)
    return pieces


def query_window(ctx: IngestContext, spec: QuerySpec, expected: int) -> list[dict[str, Any]]:
    return caom.fetch(ctx.mast, spec, expected, min_days=ctx.params.min_window_days, attempts=ctx.attempts)


@dataclass
class ObservationsOutcome:
    scope: list[str]  # proposal ids this run covers, numerically sorted
    received: int = 0
    written: int = 0
    seen_max_release: float | None = None


def commit_observations(ctx: IngestContext, selection: Selection,
                        row_lists: Iterable[Sequence[dict[str, Any]]]) -> ObservationsOutcome:
    rows = [row for rows in row_lists for row in rows]
    observations, failures = caom.to_observations(rows)
    if ctx.params.max_proposals is not None:
        keep = set(sorted({o.proposal_id for o in observations}, key=int)[: ctx.params.max_proposals])
        observations = [o for o in observations if o.proposal_id in keep]
    records = [_q(f.record_id, f.reason, f.detail) for f in failures]
    found = {o.proposal_id for o in observations}
    records += [_q(f"proposal/{pid}", "no_observations", "no public HST science image of this proposal in "
                   f"the window {selection.window}") for pid in selection.proposal_ids if pid not in found]
    quarantine(ctx, records)
    stored = {r["obsid"]: r for r in ctx.rows("observations")}
    replace = ctx.params.rebuild and selection.full
    changed = [o for o in observations if replace or stored.get(o.obsid) != o.model_dump()]
    if changed:
        table = table_from_records(changed, OBSERVATIONS_SCHEMA)
        config = {"criteria": caom.SCIENCE_IMAGES, "calib_levels": ctx.params.calib_levels,
                  "mast_url": ctx.settings.mast_url}
        with ctx.lock:
            if replace:
                ctx.tables.write("observations", table, config=config)
            else:
                ctx.tables.upsert("observations", table, key="obsid", config=config)
    ctx.stats.update(queried=len(rows), observations_written=len(changed), observations_refused=len(failures))
    releases = [o.t_obs_release for o in observations if o.t_obs_release is not None]
    scope = sorted(found, key=int)
    if not selection.query:  # retry-failed only: the proposals that have something to retry
        scope = failed_scope(ctx)
    elif selection.complete:
        # A window run also re-attempts what failed on server trouble in earlier runs, wherever
        # its releases lie: the watermark has moved past them, so no later window would.
        scope = sorted(found | troubled_scope(ctx), key=int)
    return ObservationsOutcome(scope=scope, received=len(rows), written=len(changed),
                               seen_max_release=max(releases) if releases else None)


def proposal_failure_reasons(ctx: IngestContext) -> dict[str, set[str]]:
    """Proposal id -> the reasons its documents failed (not "no_observations": that one may change
    any day)."""
    with ctx.lock:
        keys = list(_quarantined_keys(ctx))
    reasons: dict[str, set[str]] = {}
    for record_id, stage, reason in keys:
        if stage == STAGE and record_id.startswith("proposal/") and reason != "no_observations":
            reasons.setdefault(record_id.split("/", 1)[1], set()).add(reason)
    return reasons


def failed_proposals(ctx: IngestContext) -> set[str]:
    """Proposals whose documents failed, for any reason."""
    return set(proposal_failure_reasons(ctx))


def transiently_failed_proposals(ctx: IngestContext) -> set[str]:
    """Proposals whose documents failed, only ever on server trouble (every run tries them again)."""
    return {pid for pid, reasons in proposal_failure_reasons(ctx).items()
            if all(server_trouble(reason) for reason in reasons)}


def definitively_failed_proposals(ctx: IngestContext) -> set[str]:
    """Proposals with a failure that was an answer (404, 403, a bad document): left for --retry-failed.

    A proposal that only ever failed on server trouble is not among them: every run tries it again.
    Once any of its failures was definitive it waits for --retry-failed, even if a later try met
    an outage (the quarantine keeps each reason once, so which came last cannot be told).
    """
    return {pid for pid, reasons in proposal_failure_reasons(ctx).items()
            if not all(server_trouble(reason) for reason in reasons)}


def troubled_scope(ctx: IngestContext) -> set[str]:
    """Observed proposals with a document or a preview that failed only on server trouble."""
    stored = {r["proposal_id"] for r in ctx.rows("proposals")}
    ids = transiently_failed_proposals(ctx) - stored
    ids |= {r["proposal_id"] for r in ctx.rows("previews")
            if r["status"] == "http_error" and failed_transiently(PreviewImage.model_validate(r))}
    return ids & {r["proposal_id"] for r in ctx.rows("observations")}


def failed_scope(ctx: IngestContext) -> list[str]:
    ids = {r["proposal_id"] for r in ctx.rows("previews") if r["status"] in FAILED}
    ids |= failed_proposals(ctx) & {r["proposal_id"] for r in ctx.rows("observations")}
    return sorted(ids, key=int)


def quarantine_catalog_without_observations(ctx: IngestContext) -> None:
    """After a whole-archive run, catalog proposals with no public science image are recorded."""
    if not ctx.settings.catalog_url:
        return
    catalog, _ = ctx.catalog()
    observed = {r["proposal_id"] for r in ctx.rows("observations")}
    quarantine(ctx, [_q(f"proposal/{pid}", "no_observations",
                        f"in the catalog ({rec.proposal_type or 'type unknown'}, cycle {rec.cycle}) but MAST has no "
                        "public HST science image of it") for pid, rec in catalog.items() if pid not in observed])


# -- proposals -----------------------------------------------------------------------------------
def proposal_targets(ctx: IngestContext, scope: Sequence[str]) -> list[str]:
    """Proposals of the scope that need fetching: not stored, not known to fail (unless asked).

    A proposal that failed only on server trouble is fetched again: the outage may be over.
    """
    p = ctx.params
    if p.rebuild:
        return list(scope)
    stored = {r["proposal_id"] for r in ctx.rows("proposals")}
    failed = set() if p.retry_failed else definitively_failed_proposals(ctx)
    return [pid for pid in scope if pid not in stored and pid not in failed]


def proposal_fetcher(ctx: IngestContext) -> ProposalFetcher:
    catalog, failures = ctx.catalog()
    return ProposalFetcher(ctx.documents, DocumentCache(join(ctx.layout.cache, "documents")),
                           ctx.settings.stsci_url, catalog=catalog,
                           catalog_failures={f.proposal_id: f for f in failures},
                           refetch=ctx.params.rebuild or ctx.params.retry_failed)


def fetch_proposals(ctx: IngestContext, proposal_ids: Sequence[str]) -> tuple[list[Proposal], list[ProposalFailure]]:
    return proposal_fetcher(ctx).fetch_many(proposal_ids)


def commit_proposals(ctx: IngestContext, good: Sequence[Proposal], bad: Sequence[ProposalFailure]) -> int:
    quarantine(ctx, [_q(f"proposal/{f.proposal_id}", f.reason, f.detail) for f in bad])
    ctx.stats.update(proposals_fetched=len(good), proposals_refused=len(bad))
    if not good:
        return 0
    stored = {r["proposal_id"]: r for r in ctx.rows("proposals")}
    changed = [p for p in good if stored.get(p.proposal_id) != p.model_dump()]
    if changed:
        with ctx.lock:
            ctx.tables.upsert("proposals", table_from_records(changed, PROPOSALS_SCHEMA), key="proposal_id",
                              partition_by="cycle", config={"sources": ["catalog", "apt", "pro"]})
    return len(changed)


# -- previews ------------------------------------------------------------------------------------
# What decides a stored image's bytes (IngestParams.preview_config() keys). The sample settings
# (max_images_per_proposal, seed) may change between runs: stored previews stay, new ones top up.
IMAGE_SETTINGS = ("policy", "image_size", "padding_color", "min_image_side", "max_image_pixels")


def recorded_image_settings(tables: TableStore) -> dict[str, Any]:
    """The image settings the previews table was made with, as IngestParams fields ({} if none)."""
    manifest = tables.manifest("previews")
    config = manifest.config if manifest is not None else {}
    fields = {name: config[name] for name in IMAGE_SETTINGS if name in config}
    if "policy" in fields:
        fields["preview_policy"] = fields.pop("policy")
    return fields


def check_image_settings(ctx: IngestContext) -> None:
    """Refuse to add images made under other settings to a previews table (unless rebuilding).

    Stored previews are never re-made by a plain run, so their table would claim the new
    settings for images made under the old ones.
    """
    if ctx.params.rebuild:
        return
    manifest = ctx.tables.manifest("previews")
    if manifest is None:
        return
    requested = ctx.params.preview_config()
    differing = [name for name in IMAGE_SETTINGS
                 if name in manifest.config and manifest.config[name] != requested[name]]
    if differing:
        changes = "; ".join(f"{name}: stored {manifest.config[name]!r}, requested {requested[name]!r}"
                            for name in differing)
        raise InputError(f"the previews under {ctx.layout.tables} were made with other settings ({changes}): "
                         "use the stored settings, or --rebuild to make every preview again")


def recover(ctx: IngestContext) -> int:
    """Fold outcomes journaled by a killed run into the tables before planning anything."""
    pending = ctx.journal.load()
    if pending:
        log.info("ingest: folding %d preview outcomes left by an interrupted run", len(pending))
        commit_previews(ctx, list(pending.values()))
        ctx.stats["previews_recovered"] += len(pending)
    return len(pending)


def plan_preview_jobs(ctx: IngestContext, scope: Sequence[str]) -> tuple[list[PreviewJob], list[PreviewImage]]:
    """Jobs for the proposals in scope, and rows decided without a download.

    Previews do not wait for the proposal text: a proposal whose documents failed today may be
    fixed by --retry-failed, and the dataset stage joins the two tables anyway.
    """
    p = ctx.params
    wanted = set(scope)
    members = [Observation.model_validate(r) for r in ctx.rows("observations") if r["proposal_id"] in wanted]
    existing = {} if p.rebuild else {r["obsid"]: PreviewImage.model_validate(r) for r in ctx.rows("previews")}
    return plan_previews(members, existing, policy=p.preview_policy, limit=p.max_images_per_proposal,
                         seed=p.seed, retry_failed=p.retry_failed)


def preview_fetcher(ctx: IngestContext) -> PreviewFetcher:
    p = ctx.params
    spec = ImageSpec(size=p.image_size, padding=p.padding_rgb, min_side=p.min_image_side,
                     max_pixels=p.max_image_pixels)
    return PreviewFetcher(ctx.mast, ctx.images, ctx.journal, spec, p.preview_policy, ctx.attempts,
                          product_batch_size=p.product_batch_size,
                          use_astroquery_download=p.download_via == "astroquery")


def download_previews(ctx: IngestContext, jobs: Sequence[PreviewJob]) -> list[PreviewImage]:
    return preview_fetcher(ctx).run_batch(jobs)


def commit_previews(ctx: IngestContext, rows: Sequence[PreviewImage]) -> int:
    """Quarantine the failures, upsert the rows, then forget their journal entries."""
    if not rows:
        return 0
    latest = {r.obsid: r for r in rows}
    quarantine(ctx, [_q(f"preview/{r.obsid}", quarantine_reason(r), f"{r.source_url}: {r.error}")
                     for r in latest.values() if r.status in FAILED])
    with ctx.lock:
        ctx.tables.upsert("previews", table_from_records(latest.values(), PREVIEWS_SCHEMA), key="obsid",
                          config=ctx.params.preview_config())
    ctx.journal.clear(latest)
    counts = Counter(r.status for r in latest.values())
    ctx.stats.update({f"previews_{status}": n for status, n in counts.items()})
    return len(latest)


def prune_after_full_rebuild(ctx: IngestContext) -> None:
    """A full rebuild keeps only previews of stored observations (rows of vanished ones go)."""
    obsids = {r["obsid"] for r in ctx.rows("observations")}
    rows = ctx.rows("previews")
    kept = [r for r in rows if r["obsid"] in obsids]
    if len(kept) != len(rows):
        with ctx.lock:
            ctx.tables.write("previews", pa.Table.from_pylist(kept, schema=PREVIEWS_SCHEMA),
                             config=ctx.params.preview_config())


# -- finish --------------------------------------------------------------------------------------
def finish(ctx: IngestContext, selection: Selection, outcome: ObservationsOutcome) -> dict[str, Any]:
    """Advance the watermark (a complete window run only), last; return the stage summary."""
    if ctx.params.rebuild and selection.full:
        prune_after_full_rebuild(ctx)
    if selection.query and selection.full:
        quarantine_catalog_without_observations(ctx)
    if selection.query and selection.complete and not selection.proposal_ids:
        previous = readable_watermark(ctx, selection)
        covered = previous.t_obs_release if previous is not None else 0.0
        if selection.window.start <= covered:
            mark = advance(previous, outcome.seen_max_release, selection.window.end)
            if mark is not None:
                write_watermark(ctx.layout, mark)
        else:
            # A window that starts past what is ingested leaves a gap below it: moving the
            # watermark would make every later run start after data never asked for.
            log.info("ingest: window %s starts after the watermark (%.5f); watermark left as is",
                     selection.window, covered)
    digests = {}
    for name in TABLES:
        manifest = ctx.tables.manifest(name)
        digests[name] = manifest.digest if manifest is not None else ""
    return digests


def readable_watermark(ctx: IngestContext, selection: Selection) -> Watermark | None:
    """The stored watermark; a damaged one is replaced when this window started at the very
    beginning (it then covers everything the watermark could claim), else an InputError."""
    try:
        return read_watermark(ctx.layout)
    except InputError as err:
        if selection.window.start > 0:
            raise
        log.warning("%s: replaced, since this run covered every release from the start", err)
        return None


def table_digest(digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
