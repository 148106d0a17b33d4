"""The HTTP client under astroquery and the document fetcher: timeouts, retries, politeness.

astroquery 0.4.11 sends every request without a socket timeout and never retries
(mast-access.md 1.4), so a stalled MAST would hang a run forever and a 503 would fail it. We
mount a `TimeoutRetryAdapter` on the `requests.Session` astroquery uses: every request gets
(connect, read) timeouts and bounded retries with exponential backoff and jitter on 429, 5xx and
connection errors (POST included: MAST's invoke is a read). What the adapter cannot see (a body
cut short, an EXECUTING answer polled too eagerly) is handled by `with_retries` and by a
response hook that backs off between EXECUTING polls.

Each thread gets its own astroquery `ObservationsClass` (its own session): the shared singleton
keeps per-call state (`_current_service`) that concurrent queries would trample.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from schemas.errors import HubbleClipError, InputError, PermanentRemoteError, RemoteError
from schemas.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
EXECUTING_BACKOFF_S = (0.05, 2.0)  # first and largest pause between EXECUTING polls


class TimeoutRetryAdapter(HTTPAdapter):
    """An adapter that supplies (connect, read) timeouts to callers that pass none."""

    def __init__(self, *args: Any, timeout: tuple[float, float], **kwargs: Any):
        self._timeout = timeout
        super().__init__(*args, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


def build_retry(retries: int, backoff_s: float = DEFAULT_BACKOFF_S) -> Retry:
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        allowed_methods=None,  # MAST's invoke is a POST, but a read: safe to repeat
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff_s,
        backoff_jitter=backoff_s,
        backoff_max=MAX_BACKOFF_S,
        respect_retry_after_header=True,
        raise_on_status=False,  # the caller sees the last answer and classifies it
    )


@dataclass
class ResponseLog:
    """What the last response on one session said; astroquery's download_file hides it.

    The response object itself is kept only while `capturing()` (one astroquery download, whose
    length check needs `raw.tell()` after the body is read): kept between requests, each thread
    would hold its last answer alive, body included (a 5,000-row MAST page is megabytes).
    """

    status_code: int = 0
    executing_polls: int = 0
    response: requests.Response | None = None  # the last one while capturing, else None
    capture: bool = False

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Keep the responses that arrive inside the block; forget the last one on leaving it."""
        self.capture, self.response = True, None
        try:
            yield
        finally:
            self.capture, self.response = False, None


def _track_response(record: ResponseLog) -> Callable[..., requests.Response]:
    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        record.status_code = response.status_code
        record.response = response if record.capture else None
        if response.request.method == "POST" and "/invoke" in response.url and _is_executing(response):
            # astroquery re-posts an EXECUTING request at once, in a tight loop; pause first.
            record.executing_polls += 1
            first, largest = EXECUTING_BACKOFF_S
            time.sleep(min(largest, first * 2 ** (record.executing_polls - 1)) * (0.5 + random.random()))
        else:
            record.executing_polls = 0
        return response

    return hook


def _is_executing(response: requests.Response) -> bool:
    try:
        content = response.content
    except requests.RequestException:
        return False
    if b"EXECUTING" not in content[:4096]:
        return False
    try:
        return json.loads(content).get("status") == "EXECUTING"
    except (ValueError, AttributeError):
        return False


def configure_session(session: requests.Session, settings: Settings, *, backoff_s: float = DEFAULT_BACKOFF_S,
                      pool_size: int = 32) -> ResponseLog:
    """Mount timeouts + retries, set our User-Agent (and the MAST token), track responses."""
    adapter = TimeoutRetryAdapter(
        timeout=(settings.connect_timeout_s, settings.read_timeout_s),
        max_retries=build_retry(settings.http_retries, backoff_s),
        pool_connections=pool_size,
        pool_maxsize=pool_size,
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    current = session.headers.get("User-Agent", "")
    if settings.user_agent not in current:
        session.headers["User-Agent"] = f"{settings.user_agent} {current}".strip()
    token = settings.mast_token.get_secret_value()
    if token:
        # What MastAuth.login sets, without its live session_info round trip.
        session.headers["Authorization"] = f"token {token}"
    record = ResponseLog()
    session.hooks["response"].append(_track_response(record))
    return record


def retryable_status(status: int) -> bool:
    """A status that says the server is in trouble (retried), not that the request is refused."""
    return status in RETRY_STATUSES or status >= 500


# A batch this large whose every record fails on server trouble means the archive is down (a
# single record failing says nothing about the archive).
MIN_BATCH_TO_JUDGE_ARCHIVE = 2


def server_trouble(reason: str) -> bool:
    """Whether a failure reason (`http_<status>`, `http_error`) names server trouble that may pass.

    `http_error` is a failure with no status: mostly a timeout or a body cut short past the
    retries. The few definitive refusals without a status (an oversize body, an unsupported URL
    scheme) are taken as trouble too: re-trying them is cheap, a declared oversize body being
    refused before it is read.
    """
    if reason == "http_error":
        return True
    status = reason.removeprefix("http_")
    return reason.startswith("http_") and status.isdigit() and retryable_status(int(status))


def status_error(status: int, what: str) -> HubbleClipError:
    """Classify an HTTP status: retryable infrastructure trouble, or a definitive answer.

    The error carries `status_code`, so callers record the code without parsing the message.
    """
    err: HubbleClipError
    if retryable_status(status):
        err = RemoteError(f"{what}: HTTP {status} (server trouble; retried)")
    else:
        err = PermanentRemoteError(f"{what}: HTTP {status}")
    err.status_code = status  # type: ignore[attr-defined]
    return err


def classify(exc: BaseException, what: str) -> HubbleClipError:
    """Map a client-library exception to our typed errors (by type, never by message text)."""
    if isinstance(exc, HubbleClipError):
        return exc
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return status_error(exc.response.status_code, what)
    if isinstance(exc, requests.RequestException | TimeoutError | ConnectionError | ValueError):
        # connection failures, timeouts, bodies cut short, JSON that does not parse
        return RemoteError(f"{what}: {type(exc).__name__}: {exc}")
    try:
        from astroquery.exceptions import RemoteServiceError

        if isinstance(exc, RemoteServiceError):
            return PermanentRemoteError(f"{what}: MAST answered ERROR: {exc}")
    except ImportError:  # pragma: no cover - astroquery is a dependency
        pass
    return RemoteError(f"{what}: {type(exc).__name__}: {exc}")


def backoff_delay(attempt: int, base_s: float = DEFAULT_BACKOFF_S) -> float:
    """Exponential backoff with full jitter: attempt 1 -> up to base, 2 -> up to 2*base, ..."""
    return min(MAX_BACKOFF_S, base_s * 2 ** (attempt - 1)) * random.random()


def with_retries(fn: Callable[[], T], *, what: str, attempts: int, base_s: float = DEFAULT_BACKOFF_S) -> T:
    """Call `fn` until it succeeds; retry RemoteError (bounded), never permanent or input errors."""
    last: HubbleClipError | None = None
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return fn()
        except (PermanentRemoteError, InputError):
            raise
        except Exception as exc:  # noqa: BLE001 - classified just below
            err = classify(exc, what)
            if not isinstance(err, RemoteError):
                raise err from exc
            last = err
            if attempt < attempts:
                delay = backoff_delay(attempt, base_s)
                log.info("%s failed (%s); retry %d/%d in %.2fs", what, err, attempt, attempts - 1, delay)
                time.sleep(delay)
    assert last is not None
    raise last


class RateLimiter:
    """At most `rate` acquisitions per second across threads (evenly spaced, no burst)."""

    def __init__(self, rate: float):
        if rate <= 0:
            raise InputError(f"rate limit must be positive, got {rate}")
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            time.sleep(delay)


@dataclass
class MastClient:
    """One astroquery `ObservationsClass` per thread, each on a session with our adapter."""

    settings: Settings
    backoff_s: float = DEFAULT_BACKOFF_S
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        from tasks.mast_config import configure_astroquery

        configure_astroquery(self.settings.mast_url)

    def observations(self) -> Any:
        """This thread's `ObservationsClass`, created on first use."""
        obs = getattr(self._local, "observations", None)
        if obs is None:
            from astroquery.mast import Observations

            obs = Observations.__class__()  # a fresh ObservationsClass with its own session
            self._local.response_log = configure_session(obs._session, self.settings, backoff_s=self.backoff_s)
            self._local.observations = obs
        return obs

    @property
    def response_log(self) -> ResponseLog:
        self.observations()
        return self._local.response_log

    @property
    def session(self) -> requests.Session:
        return self.observations()._session


@dataclass
class DocumentClient:
    """GETs STScI documents politely: one global rate limit, our User-Agent, timeouts, retries."""

    settings: Settings
    backoff_s: float = DEFAULT_BACKOFF_S
    max_bytes: int = 32 * 1024 * 1024
    _limiter: RateLimiter = field(init=False, repr=False)
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        self._limiter = RateLimiter(self.settings.stsci_requests_per_second)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = ""
            configure_session(session, self.settings, backoff_s=self.backoff_s)
            session.headers.pop("Authorization", None)  # the MAST token is for MAST only
            self._local.session = session
        return session

    def get(self, url: str) -> bytes:
        """The body of `url`; PermanentRemoteError on 4xx, RemoteError on trouble that may pass."""
        return with_retries(lambda: self._get_once(url), what=f"GET {url}",
                            attempts=self.settings.http_retries + 1, base_s=self.backoff_s)

    def _get_once(self, url: str) -> bytes:
        self._limiter.acquire()
        response = self._session().get(url, stream=True)
        try:
            if response.status_code != 200:
                raise status_error(response.status_code, f"GET {url}")
            return read_checked(response, self.max_bytes, f"GET {url}")
        finally:
            response.close()


def declared_length(response: requests.Response) -> int | None:
    declared = response.headers.get("Content-Length")
    return int(declared) if declared and declared.isdigit() else None


def wire_length(response: requests.Response, decoded: int) -> int | None:
    """How many body bytes came over the wire: what Content-Length counts.

    requests decodes `Content-Encoding: gzip` (it asks for it), so with an encoded body the bytes
    we hold are not the bytes Content-Length counts; urllib3 counts the wire bytes (`tell()`).
    None when neither can be told (an encoded body on a connection that cannot say).
    """
    try:
        received = response.raw.tell()
    except (AttributeError, OSError, ValueError):
        received = None
    if isinstance(received, int) and not isinstance(received, bool):
        return received
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    return decoded if encoding in ("", "identity") else None


def check_length(response: requests.Response, decoded: int, what: str) -> None:
    """RemoteError (retryable) when the body that came is shorter or longer than Content-Length."""
    expected = declared_length(response)
    received = wire_length(response, decoded)
    if expected is not None and received is not None and received != expected:
        raise RemoteError(f"{what}: got {received} of {expected} bytes (truncated)")


def read_checked(response: requests.Response, max_bytes: int, what: str) -> bytes:
    """Read a streamed body, refusing oversize bodies and bodies shorter than Content-Length."""
    expected = declared_length(response)
    if expected is not None and expected > max_bytes:
        raise PermanentRemoteError(f"{what}: body of {expected} bytes exceeds the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise PermanentRemoteError(f"{what}: body exceeds the {max_bytes}-byte limit")
    check_length(response, size, what)
    return b"".join(chunks)


def stream_to_file(response: requests.Response, path: str, max_bytes: int, what: str) -> int:
    """Stream a body into `path`, refusing oversize bodies and bodies shorter than Content-Length."""
    expected = declared_length(response)
    if expected is not None and expected > max_bytes:
        raise PermanentRemoteError(f"{what}: body of {expected} bytes exceeds the {max_bytes}-byte limit")
    size = 0
    with open(path, "wb") as out:
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > max_bytes:
                raise PermanentRemoteError(f"{what}: body exceeds the {max_bytes}-byte limit")
            out.write(chunk)
    check_length(response, size, what)
    return size
