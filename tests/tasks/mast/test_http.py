"""The HTTP layer: timeouts, bounded retries with backoff, truncation, rate limit, User-Agent."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from schemas.errors import PermanentRemoteError, RemoteError
from schemas.settings import Settings
from tasks.mast.http import DocumentClient, RateLimiter, configure_session, stream_to_file, with_retries


class _Script:
    """What the test server answers, per path: a list of (status, body, declared length, delay),
    optionally with a dict of extra headers as a fifth item."""

    def __init__(self) -> None:
        self.answers: dict[str, list[tuple]] = {}
        self.seen: list[tuple[str, str, str]] = []  # (method, path, user agent)
        self.lock = threading.Lock()

    def next(self, path: str) -> tuple:
        with self.lock:
            queue = self.answers.get(path, [])
            return queue.pop(0) if len(queue) > 1 else (queue[0] if queue else (404, b"missing", None, 0.0))


@pytest.fixture
def server() -> Iterator[tuple[str, _Script]]:
    script = _Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            script.seen.append((self.command, self.path, self.headers.get("User-Agent", "")))
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status, body, declared, delay, *extra = script.next(self.path)
            time.sleep(delay)
            self.send_response(status)
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
            if declared is not None:
                self.send_header("Connection", "close")
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:
                pass

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()
        httpd.server_close()


def _settings(**kw) -> Settings:
    values = {"connect_timeout_s": 1.0, "read_timeout_s": 0.3, "http_retries": 3,
              "stsci_requests_per_second": 1000.0, "user_agent": "hubbleclip-test/1"}
    values.update(kw)
    return Settings(**values)


def test_503s_are_retried_with_backoff_then_succeed(server):
    url, script = server
    script.answers["/doc"] = [(503, b"busy", None, 0.0), (503, b"busy", None, 0.0), (200, b"hello", None, 0.0)]
    client = DocumentClient(_settings(), backoff_s=0.01)
    assert client.get(url + "/doc") == b"hello"
    assert [m for m, p, _ in script.seen if p == "/doc"] == ["GET"] * 3
    assert all(ua.startswith("hubbleclip-test/1") for _, _, ua in script.seen)


def test_retries_are_bounded(server):
    url, script = server
    script.answers["/down"] = [(503, b"busy", None, 0.0)]
    client = DocumentClient(_settings(http_retries=2), backoff_s=0.0)
    with pytest.raises(RemoteError, match="HTTP 503"):
        client.get(url + "/down")
    # adapter retries (1 + 2) per attempt, times (1 + 2) attempts: bounded, never endless
    assert len([p for _, p, _ in script.seen if p == "/down"]) == 9


def test_404_is_permanent_and_not_retried(server):
    url, script = server
    client = DocumentClient(_settings(), backoff_s=0.0)
    with pytest.raises(PermanentRemoteError) as info:
        client.get(url + "/nothing")
    assert info.value.status_code == 404
    assert len(script.seen) == 1


def test_a_truncated_body_is_detected_and_retried(server):
    url, script = server
    script.answers["/cut"] = [(200, b"half", 100, 0.0), (200, b"whole body", None, 0.0)]
    client = DocumentClient(_settings(), backoff_s=0.0)
    assert client.get(url + "/cut") == b"whole body"


def test_a_stalled_server_times_out(server):
    url, script = server
    script.answers["/slow"] = [(200, b"late", None, 2.0)]
    client = DocumentClient(_settings(http_retries=0), backoff_s=0.0)
    started = time.monotonic()
    with pytest.raises(RemoteError):
        client.get(url + "/slow")
    assert time.monotonic() - started < 1.5  # the 0.3 s read timeout fired, not the 2 s answer


def test_adapter_retries_posts_and_applies_default_timeouts(server):
    url, script = server
    script.answers["/invoke"] = [(503, b"x", None, 0.0), (200, b'{"status":"COMPLETE"}', None, 0.0)]
    session = requests.Session()
    configure_session(session, _settings(), backoff_s=0.0)
    assert session.post(url + "/invoke", data="request=1").status_code == 200  # POST retried (MAST invoke)
    script.answers["/hang"] = [(200, b"x", None, 2.0)]
    with pytest.raises(requests.RequestException):
        session.get(url + "/hang", timeout=None)  # astroquery passes None: the adapter's timeout applies


def test_rate_limiter_spaces_requests_across_threads():
    limiter = RateLimiter(20.0)
    stamps: list[float] = []

    def work() -> None:
        for _ in range(3):
            limiter.acquire()
            stamps.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert stamps[-1] - stamps[0] >= 11 * 0.05 * 0.9  # 12 requests at 20/s span >= 0.55 s


def test_with_retries_never_retries_permanent_errors():
    calls = []

    def permanent() -> None:
        calls.append(1)
        raise PermanentRemoteError("no")

    with pytest.raises(PermanentRemoteError):
        with_retries(permanent, what="x", attempts=5, base_s=0.0)
    assert len(calls) == 1


GZIP = {"Content-Encoding": "gzip", "Content-Type": "application/xml"}


def test_a_gzip_body_is_checked_against_the_bytes_on_the_wire(server, tmp_path):
    # requests asks for gzip and decodes it; Content-Length counts the compressed bytes.
    url, script = server
    body = b"<HSTProposal Phase2ID='13012'>" + b"x" * 20000 + b"</HSTProposal>"
    wire = gzip.compress(body)
    script.answers["/doc.apt"] = [(200, wire, None, 0.0, GZIP)]
    client = DocumentClient(_settings(http_retries=0), backoff_s=0.0)
    assert client.get(url + "/doc.apt") == body

    session = requests.Session()
    configure_session(session, _settings(), backoff_s=0.0)
    with session.get(url + "/doc.apt", stream=True) as response:
        assert stream_to_file(response, str(tmp_path / "doc"), 1 << 20, "GET doc") == len(body)
    assert (tmp_path / "doc").read_bytes() == body


def test_a_truncated_gzip_body_is_still_detected_and_retried(server):
    url, script = server
    body = b"y" * 50000
    wire = gzip.compress(body)
    script.answers["/cut.apt"] = [(200, wire[: len(wire) // 2], len(wire), 0.0, GZIP), (200, wire, None, 0.0, GZIP)]
    client = DocumentClient(_settings(), backoff_s=0.0)
    assert client.get(url + "/cut.apt") == body
    assert len([p for _, p, _ in script.seen if p == "/cut.apt"]) == 2


def test_astroquery_downloads_of_gzip_bodies_are_not_called_truncated(server, tmp_path):
    """`download_via="astroquery"`: the length check uses the tracked response's wire bytes."""
    from schemas.ingest import PreviewPolicy
    from tasks.mast.imaging import ImageSpec
    from tasks.mast.previews import PreviewFetcher

    url, script = server
    image = b"\xff\xd8" + bytes(range(256)) * 64
    script.answers["/preview.jpg"] = [(200, gzip.compress(image), None, 0.0, {"Content-Encoding": "gzip"})]
    session = requests.Session()
    record = configure_session(session, _settings(), backoff_s=0.0)

    class Observations:
        def download_file(self, uri, local_path, cache, verbose):  # what astroquery does, on its session
            with session.get(url + "/preview.jpg", stream=True) as response, open(local_path, "wb") as out:
                for chunk in response.iter_content(1024):
                    out.write(chunk)
            return "COMPLETE", None, None

    class Client:
        backoff_s = 0.0
        response_log = record

        def observations(self):
            return Observations()

    fetcher = PreviewFetcher(Client(), None, None, ImageSpec(), PreviewPolicy(), attempts=1,
                             use_astroquery_download=True)
    assert fetcher.download("mast:HST/product/x_total_drc.jpg", str(tmp_path / "x.part")) == image
    assert record.response is None  # checked, then let go


def test_the_response_log_holds_no_response_between_requests(server):
    # Each thread's log outlives its requests: holding the last response would keep its body
    # (a 5,000-row MAST page) alive. Only a capturing block sees it, and it is dropped on leaving.
    url, script = server
    script.answers["/page"] = [(200, b"x" * 100_000, None, 0.0)]
    session = requests.Session()
    record = configure_session(session, _settings(), backoff_s=0.0)
    assert len(session.get(url + "/page").content) == 100_000
    assert record.response is None and record.status_code == 200
    with record.capturing():
        session.get(url + "/page")
        assert record.response is not None and record.response.raw.tell() == 100_000
    assert record.response is None
