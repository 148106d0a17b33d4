"""One batch of previews: a preview whose server keeps failing is a record, a dead archive is an error."""

from __future__ import annotations

import pytest

from schemas.errors import RemoteError
from schemas.ingest import PreviewPolicy
from storage import ImageStore
from tasks.mast.http import status_error
from tasks.mast.imaging import ImageSpec
from tasks.mast.journal import PreviewJournal
from tasks.mast.previews import PreviewFetcher, PreviewJob, quarantine_reason
from tests.tasks.mast.conftest import encoded_image


class _Client:
    backoff_s = 0.0


def _fetcher(tmp_path, broken: set[str]) -> tuple[PreviewFetcher, PreviewJournal, list[str]]:
    journal = PreviewJournal(str(tmp_path / "state"), "config")
    fetcher = PreviewFetcher(_Client(), ImageStore(str(tmp_path / "images")), journal, ImageSpec(size=32),
                             PreviewPolicy(include=[]), attempts=2)
    asked: list[str] = []

    def download(url: str, part_path: str) -> bytes:
        asked.append(url)
        if url in broken:
            raise status_error(500, f"download {url}")  # what the client raises past its own retries
        return encoded_image((64, 48), (200, 40, 40))

    fetcher.download = download
    return fetcher, journal, asked


def test_a_preview_that_keeps_failing_is_recorded_not_fatal(tmp_path):
    bad = PreviewJob("2", "100", "https://archive.test/previews/broken_total.jpg")
    good = PreviewJob("1", "100", "https://archive.test/previews/fine_total.jpg")
    fetcher, journal, asked = _fetcher(tmp_path, {bad.jpeg_url})
    rows = fetcher.run_batch([bad, good])
    assert [(r.obsid, r.status, r.http_status) for r in rows] == [("2", "http_error", 500), ("1", "ok", 0)]
    assert asked.count(bad.jpeg_url) == 2  # its retries were spent first
    assert quarantine_reason(rows[0]) == "http_500"
    assert set(journal.load()) == {"1", "2"}


def test_a_batch_that_fails_whole_is_an_error_and_journals_nothing(tmp_path):
    jobs = [PreviewJob(str(i), "100", f"https://archive.test/previews/{i}_total.jpg") for i in (1, 2)]
    fetcher, journal, _ = _fetcher(tmp_path, {j.jpeg_url for j in jobs})
    with pytest.raises(RemoteError, match="HTTP 500"):
        fetcher.run_batch(jobs)
    assert journal.load() == {}  # the archive is down: nothing is quarantined, the batch is retried


def test_a_batch_of_one_that_meets_server_trouble_is_a_row_not_an_error(tmp_path):
    # One preview says nothing about the archive: a last batch of one would otherwise stop every
    # run. Its row is quarantined, and the next run tries it again (failed_transiently).
    from tasks.mast.previews import failed_transiently

    job = PreviewJob("1", "100", "https://archive.test/previews/1_total.jpg")
    fetcher, journal, _ = _fetcher(tmp_path, {job.jpeg_url})
    rows = fetcher.run_batch([job])
    assert [(r.obsid, r.status, r.http_status) for r in rows] == [("1", "http_error", 500)]
    assert failed_transiently(rows[0]) and set(journal.load()) == {"1"}
