"""Previews: which observations get one (policy + seeded sample), download, validate, store.

Sampling. Each observation gets a priority, sha256(seed:obsid); a proposal's previews are its
in-policy observations in priority order (a seeded sample without replacement). A proposal holds
at most `max_images_per_proposal` attempted previews: a run fills the free slots with the
highest-priority observations not yet attempted. Because the order is fixed, a run killed after
k downloads and resumed picks exactly the ones the uninterrupted run would have picked, and a
refresh that brings new observations of a known proposal only tops it up.

Download. `jpegURL` is a `mast:` URI (through astroquery's `Observations.download_file`, i.e. the
Download endpoint) or an http(s) URL (GET on the same retrying session). Without one, products
are listed (`get_product_list`, <= 500 obsids per call) and filtered to PREVIEW jpgs accepted by
the policy. Every download goes to a temporary file, is checked against Content-Length (astroquery
reports ERROR without raising, and never checks sizes), decoded, normalised to 512x512, and only
then put in the content-addressed image store. Its outcome is journaled at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

from schemas.errors import PermanentRemoteError, RemoteError
from schemas.ingest import PreviewPolicy
from schemas.records import Observation, PreviewImage
from storage.images import ImageStore
from tasks.mast.http import (
    MIN_BATCH_TO_JUDGE_ARCHIVE,
    MastClient,
    check_length,
    server_trouble,
    status_error,
    stream_to_file,
    with_retries,
)
from tasks.mast.imaging import ImageRejected, ImageSpec, normalize_preview
from tasks.mast.journal import PreviewJournal
from tasks.mast.observations import table_rows

log = logging.getLogger(__name__)

FAILED = frozenset({"http_error", "decode_error", "too_small", "too_large", "no_preview"})
MAX_PREVIEW_BYTES = 64 * 1024 * 1024
NOT_SAMPLED = "not sampled: the proposal's preview limit is reached"
PRODUCTS_REFUSED = "no preview product accepted by policy"


@dataclass(frozen=True)
class PreviewJob:
    obsid: str
    proposal_id: str
    jpeg_url: str  # "" -> look the preview up in the product list


def priority(seed: int, obsid: str) -> str:
    return hashlib.sha256(f"{seed}:{obsid}".encode()).hexdigest()


def preview_name(url: str) -> str:
    """The file name a preview URL points at (mast: URI, http URL, or a ?dataset= style query)."""
    parsed = urlparse(url)
    path = parsed.path if parsed.scheme in ("http", "https") else url.split("?", 1)[0]
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return f"{name}?{parsed.query}" if parsed.query and parsed.scheme in ("http", "https") else name


def products_refused(policy: PreviewPolicy) -> str:
    """The error of a policy_skip found in the product list; it names the policy that decided it."""
    return f"{PRODUCTS_REFUSED} ({policy.describe()})"


def settled_by(row: PreviewImage, policy: PreviewPolicy) -> bool:
    """A policy_skip from the product list that `policy` decided (or one that names no policy).

    Not a NOT_SAMPLED skip: those wait for a free slot. Under another policy the products are
    judged again.
    """
    if row.status != "policy_skip" or not row.error.startswith(PRODUCTS_REFUSED):
        return False
    named = row.error[len(PRODUCTS_REFUSED):].strip()
    return not named or named == f"({policy.describe()})"


def plan_previews(
    observations: Iterable[Observation],
    existing: Mapping[str, PreviewImage],
    *,
    policy: PreviewPolicy,
    limit: int,
    seed: int,
    retry_failed: bool = False,
) -> tuple[list[PreviewJob], list[PreviewImage]]:
    """Jobs to download, and rows decided without a download (policy skips) that changed.

    `observations` are all stored observations of the proposals in scope; `existing` the rows
    already recorded (table and journal). Rows that failed on server trouble are re-attempted by
    every run (a passing outage must not drop a preview for good); other failed rows only with
    `retry_failed`. Either way a re-attempt keeps its slot: it takes no new one.
    An observation without a jpegURL whose product list held only refused previews is settled
    while the policy that refused them is the policy: it takes no slot of its proposal again.
    """
    by_proposal: dict[str, list[Observation]] = defaultdict(list)
    for obs in observations:
        by_proposal[obs.proposal_id].append(obs)
    jobs: list[PreviewJob] = []
    decided: list[PreviewImage] = []

    def decide(row: PreviewImage) -> None:
        if existing.get(row.obsid) != row:
            decided.append(row)

    for proposal_id in sorted(by_proposal, key=int):
        members = sorted(by_proposal[proposal_id], key=lambda o: priority(seed, o.obsid))
        attempted = [o for o in members if o.obsid in existing and existing[o.obsid].status != "policy_skip"]
        jobs += [PreviewJob(o.obsid, proposal_id, o.jpeg_url) for o in attempted
                 if existing[o.obsid].status in FAILED and (retry_failed or failed_transiently(existing[o.obsid]))]
        free = max(0, limit - len(attempted))
        for obs in members:
            if obs.obsid in existing and existing[obs.obsid].status != "policy_skip":
                continue
            if not obs.jpeg_url and obs.obsid in existing and settled_by(existing[obs.obsid], policy):
                continue
            if obs.jpeg_url and not policy.accepts(preview_name(obs.jpeg_url)):
                decide(PreviewImage(obsid=obs.obsid, proposal_id=proposal_id, status="policy_skip",
                                    source_url=obs.jpeg_url,
                                    error=f"preview {preview_name(obs.jpeg_url)!r} refused by policy "
                                          f"({policy.describe()})"))
            elif free > 0:
                jobs.append(PreviewJob(obs.obsid, proposal_id, obs.jpeg_url))
                free -= 1
            else:
                decide(PreviewImage(obsid=obs.obsid, proposal_id=proposal_id, status="policy_skip",
                                    source_url=obs.jpeg_url, error=f"{NOT_SAMPLED} ({limit})"))
    return jobs, decided


def batches(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


@dataclass
class PreviewFetcher:
    """Downloads one batch of previews on the calling thread's astroquery client."""

    client: MastClient
    images: ImageStore
    journal: PreviewJournal
    spec: ImageSpec
    policy: PreviewPolicy
    attempts: int
    product_batch_size: int = 500
    use_astroquery_download: bool = False

    def run_batch(self, jobs: Sequence[PreviewJob]) -> list[PreviewImage]:
        """Outcomes of one batch; RemoteError when every preview of it failed on server trouble.

        A preview whose server keeps failing (retries exhausted) becomes an http_error row,
        quarantined and re-attempted by the next run, so one broken preview does not fail every
        run. Such rows are journaled only once the batch is known not to have failed whole: when
        every preview of a batch of two or more fails so the archive is down, and the batch fails
        (to be retried) rather than quarantine everything. A batch of one says nothing about the
        archive (a last batch of one would stop every run): its failure is a row like any other.
        """
        done = self.journal.load_some([j.obsid for j in jobs])
        todo = [j for j in jobs if j.obsid not in done]
        urls, unresolved = self.resolve(todo)
        outcomes = [done[j.obsid] for j in jobs if j.obsid in done]
        fresh: dict[str, PreviewImage] = {}
        troubled: dict[str, RemoteError] = {}
        workdir = tempfile.mkdtemp(prefix="hubbleclip-previews-")
        try:
            for job in todo:
                row = unresolved.get(job.obsid)
                if row is None:
                    try:
                        row = self.attempt(job, urls[job.obsid], workdir)
                    except RemoteError as err:
                        troubled[job.obsid] = err
                        continue
                self.journal.record(row)
                fresh[job.obsid] = row
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if troubled and not outcomes and not fresh and len(jobs) >= MIN_BATCH_TO_JUDGE_ARCHIVE:
            raise next(reversed(troubled.values()))
        for job in todo:
            if job.obsid in troubled:
                fresh[job.obsid] = unavailable(job, urls[job.obsid], troubled[job.obsid])
                self.journal.record(fresh[job.obsid])
        return outcomes + [fresh[j.obsid] for j in todo]

    # -- where each preview is --------------------------------------------------------------
    def resolve(self, jobs: Sequence[PreviewJob]) -> tuple[dict[str, str], dict[str, PreviewImage]]:
        """obsid -> preview URL; obsids without one get their final row instead."""
        urls = {j.obsid: j.jpeg_url for j in jobs if j.jpeg_url}
        missing = [j for j in jobs if not j.jpeg_url]
        rows: dict[str, PreviewImage] = {}
        for chunk in batches(missing, self.product_batch_size):
            found = self.list_previews([j.obsid for j in chunk])
            for job in chunk:
                names = found.get(job.obsid, [])
                accepted = [uri for uri in names if self.policy.accepts(preview_name(uri))]
                if accepted:
                    urls[job.obsid] = accepted[0]
                elif names:
                    rows[job.obsid] = PreviewImage(
                        obsid=job.obsid, proposal_id=job.proposal_id, status="policy_skip", source_url=names[0],
                        error=products_refused(self.policy))
                else:
                    rows[job.obsid] = PreviewImage(
                        obsid=job.obsid, proposal_id=job.proposal_id, status="no_preview",
                        error="no jpegURL and no PREVIEW jpg among the observation's products")
        return urls, rows

    def list_previews(self, obsids: Sequence[str]) -> dict[str, list[str]]:
        """obsid -> sorted PREVIEW .jpg dataURIs, via get_product_list + filter_products."""

        def once() -> dict[str, list[str]]:
            obs = self.client.observations()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                products = obs.get_product_list(list(obsids))
                if products is None or len(products) == 0:
                    return {}
                previews = obs.filter_products(products, productType="PREVIEW", extension="jpg")
            found: dict[str, set[str]] = defaultdict(set)
            wanted = set(obsids)
            for row in table_rows(previews):
                parent = next((str(row[k]) for k in ("parent_obsid", "obsID", "obsid")
                               if row.get(k) is not None and str(row[k]) in wanted), None)
                if parent and row.get("dataURI"):
                    found[parent].add(str(row["dataURI"]))
            return {k: sorted(v) for k, v in found.items()}

        return with_retries(once, what=f"get_product_list ({len(obsids)} obsids)", attempts=self.attempts,
                            base_s=self.client.backoff_s)

    # -- one preview -------------------------------------------------------------------------
    def attempt(self, job: PreviewJob, url: str, workdir: str) -> PreviewImage:
        """The outcome for one preview; RemoteError when its server kept failing past the retries."""
        base = {"obsid": job.obsid, "proposal_id": job.proposal_id, "source_url": url}
        try:
            data = with_retries(lambda: self.download(url, os.path.join(workdir, f"{job.obsid}.part")),
                                what=f"preview {job.obsid}", attempts=self.attempts, base_s=self.client.backoff_s)
        except PermanentRemoteError as err:
            return PreviewImage(status="http_error", error=str(err),
                                http_status=getattr(err, "status_code", 0), **base)
        original_sha = hashlib.sha256(data).hexdigest()
        try:
            square, width, height = normalize_preview(data, self.spec)
        except ImageRejected as err:
            return PreviewImage(status=err.status, error=err.detail, original_sha256=original_sha,  # type: ignore[arg-type]
                                width=err.width, height=err.height, **base)
        digest = self.images.put(square)
        return PreviewImage(status="ok", sha256=digest, original_sha256=original_sha, width=width,
                            height=height, **base)

    def download(self, url: str, part_path: str) -> bytes:
        """The preview's bytes, via a temporary file checked against Content-Length."""
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https"):
            # Only MAST gets the token; archive.stsci.edu / hla.stsci.edu previews are public.
            return self._get(url, part_path, f"download {url}", headers={"Authorization": None})
        if scheme == "mast" or url.startswith("mast:"):
            if self.use_astroquery_download:
                return self._download_with_astroquery(url, part_path)
            # The Download endpoint astroquery itself uses, escaped as astroquery escapes it; one
            # GET instead of download_file's HEAD + GET, and no error swallowed.
            endpoint = self.client.observations()._portal_api_connection.MAST_DOWNLOAD_URL
            return self._get(f"{endpoint}?uri={quote(url, safe=':/')}", part_path, f"download {url}")
        raise PermanentRemoteError(f"unsupported preview URL scheme in {url!r}")

    def _get(self, url: str, part_path: str, what: str, headers: dict | None = None) -> bytes:
        """GET into the temporary `part_path`; errors name `what` (the URI), not the server."""
        part = Path(part_path)
        try:
            response = self.client.session.get(url, stream=True, headers=headers)
            try:
                if response.status_code != 200:
                    raise status_error(response.status_code, what)
                stream_to_file(response, part_path, MAX_PREVIEW_BYTES, what)
            finally:
                response.close()
            return part.read_bytes()
        finally:
            part.unlink(missing_ok=True)

    def _download_with_astroquery(self, uri: str, part_path: str) -> bytes:
        """`Observations.download_file` (HEAD + GET): it reports ERROR without raising, so check."""
        obs = self.client.observations()
        record = self.client.response_log
        Path(part_path).unlink(missing_ok=True)
        # The length check reads the GET's raw.tell(), after the body: keep that response until
        # then, and not a moment longer.
        with record.capturing():
            status, message, _ = obs.download_file(uri, local_path=part_path, cache=False, verbose=False)
            try:
                if status != "COMPLETE":
                    # astroquery swallowed the HTTP error: the tracked response says which.
                    code = record.status_code if record.status_code >= 400 else 0
                    if code:
                        raise status_error(code, f"download {uri}")
                    raise RemoteError(f"download {uri}: {status} {message}")
                data = Path(part_path).read_bytes()
                last = record.response
                if last is not None and last.request.method == "GET":
                    check_length(last, len(data), f"download {uri}")
                if len(data) > MAX_PREVIEW_BYTES:
                    raise PermanentRemoteError(f"download {uri}: {len(data)} bytes exceeds the preview size limit")
                return data
            finally:
                Path(part_path).unlink(missing_ok=True)


def unavailable(job: PreviewJob, url: str, err: RemoteError) -> PreviewImage:
    """The row of a preview whose server kept failing (5xx, timeouts, bodies cut short)."""
    return PreviewImage(obsid=job.obsid, proposal_id=job.proposal_id, source_url=url, status="http_error",
                        error=str(err), http_status=getattr(err, "status_code", 0))


def failed_transiently(row: PreviewImage) -> bool:
    """An http_error row of server trouble (5xx, 429, timeout, body cut short): worth another try."""
    return row.status == "http_error" and server_trouble(quarantine_reason(row))


def quarantine_reason(row: PreviewImage) -> str:
    if row.status == "http_error" and row.http_status:
        return f"http_{row.http_status}"
    return row.status
