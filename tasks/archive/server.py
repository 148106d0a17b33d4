"""The local archive: an HTTP server that speaks the parts of MAST and STScI the pipeline uses.

MAST (mast-access.md section 4):
    POST /api/v0/invoke                              Mast.Caom.Filtered (filters, COUNT_BIG(*), paging),
                                                     Mast.Caom.Products; GET ...?request= also works
    POST /portal/Mashup/Mashup.asmx/columnsconfig    colConfigId=Mast.Caom.Cone | Mast.Caom.Products
    HEAD|GET /api/v0.1/Download/file?uri=mast:...    files, with Content-Length
STScI:
    GET /hst-program-info/download/hst/apt/<ID>/     Phase II APT XML (also /hst/phase2-public/<ID>.apt)
    GET /hst/phase2-public/<ID>.pro                  Phase II text report
    GET /hst/proposal-abstracts/catalog.txt          proposal abstracts catalog flat file
    GET /health                                      what is being served

Errors on the MAST endpoints are MAST-shaped (`{"status": "ERROR", "msg": ...}`); a handler failure
answers 500 and the server carries on. One thread per connection (keep-alive), answers cached per
query, so it serves hundreds of pages and previews a second. `configure()` swaps the content and
the fault knobs of a running server: astroquery binds to one server per process, so tests keep one.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from schemas.errors import InputError
from tasks.archive.content import ArchiveContent, load_sky_content
from tasks.archive.faults import FaultConfig, FaultInjector
from tasks.archive.replay import load_replay_content

__all__ = ["ArchiveServer", "FaultConfig"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
_UNSET: Any = object()
_APT = re.compile(r"^/hst-program-info/download/hst/apt/([^/]+)/?$")
_LEGACY = re.compile(r"^/hst/phase2-public/([^/]+)\.(apt|pro)$")
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".fits": "application/fits", ".json": "application/json"}


@dataclass
class _Answer:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    may_truncate: bool = True


def _mast_error(message: str, status: int = 200) -> _Answer:
    return _Answer(status, json.dumps({"status": "ERROR", "msg": message, "data": [], "fields": []}).encode())


def _not_found(what: str) -> _Answer:
    return _Answer(404, json.dumps({"status": "ERROR", "msg": f"Not found: {what}"}).encode())


def _canonical_invoke(text: str) -> str:
    """The request without astroquery's random cacheBreaker (fault decisions key on this)."""
    try:
        request = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text
    if isinstance(request, dict):
        request = {k: v for k, v in request.items() if k.lower() != "cachebreaker"}
    return json.dumps(request, sort_keys=True, default=str)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many requests
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    server_version = "HubbleCLIP-Archive/1.0"
    timeout = 60  # an idle or stalled client releases its thread after this
    error_content_type = "application/json"  # requests the stdlib itself refuses (bad syntax, bad method)
    error_message_format = '{"status": "ERROR", "msg": "%(code)d %(message)s"}'
    archive: ArchiveServer  # set on a per-server subclass

    def setup(self) -> None:
        super().setup()
        self.archive._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.archive._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _read_body(self) -> bytes | _Answer:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            return _mast_error("Invalid Content-Length", 400)
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            return _mast_error(f"Request body must be 0 to {MAX_BODY_BYTES} bytes", 413)
        return self.rfile.read(length)

    def _dispatch(self, method: str) -> None:
        status = 500
        self._recorded = False
        content, faults = self.archive._state
        try:
            body = self._read_body() if method in ("POST", "PUT") else b""
            if isinstance(body, _Answer):
                status = self._send(method, body, truncate=False)
                return
            key, answer = self._route(method, body, content, faults)
            delay = faults.delay_s(key)
            if delay:
                time.sleep(delay)
            if faults.fail(key):
                answer = _Answer(503, b'{"status":"ERROR","msg":"Service Unavailable (injected fault)"}',
                                 headers={"Retry-After": "0"}, may_truncate=False)
            truncate = method != "HEAD" and answer.may_truncate and len(answer.body) > 1 and faults.truncate(key)
            status = self._send(method, answer, truncate=truncate)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            status = 499  # the client went away mid-request
        except Exception:  # noqa: BLE001 - the server must outlive any one bad request
            log.exception("archive handler failed on %s %s", method, self.path)
            self.close_connection = True
            try:
                status = self._send(method, _mast_error("Internal archive error", 500), truncate=False)
            except OSError:
                pass
        finally:
            if not self._recorded:
                self.archive._record(method, self.path, status)

    def _send(self, method: str, answer: _Answer, *, truncate: bool) -> int:
        # log before the client can read the answer, so a client that checks the log right after
        # its response always finds the request there
        self.archive._record(method, self.path, answer.status)
        self._recorded = True
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        if truncate:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(answer.body[: len(answer.body) // 2] if truncate else answer.body)
        self.wfile.flush()
        return answer.status

    # ------------------------------------------------------------ routing

    def _route(self, method: str, body: bytes, content: ArchiveContent, faults: FaultInjector) -> tuple[str, _Answer]:
        parts = urlsplit(self.path)
        path = parts.path
        key = f"{method} {self.path}"
        if path == "/api/v0/invoke":
            if method not in ("GET", "POST"):
                return key, _mast_error(f"{method} is not supported here; POST a request", 405)
            form = body.decode("utf-8", errors="replace") if method == "POST" else parts.query
            request_text = (parse_qs(form, keep_blank_values=True).get("request") or [None])[0]
            if request_text is None:
                return key, _mast_error("Missing 'request' parameter (expected request=<MashupRequest JSON>)")
            key = f"{method} {path} {_canonical_invoke(request_text)}"
            try:
                request = json.loads(request_text)
            except (json.JSONDecodeError, RecursionError) as err:
                return key, _mast_error(f"Malformed request JSON: {err}")
            if faults.executing(key, request_text):
                return key, _Answer(200, json.dumps({"status": "EXECUTING", "msg": "", "data": [], "fields": []}).encode())
            return key, _Answer(200, content.invoke(request))
        if path == "/portal/Mashup/Mashup.asmx/columnsconfig":
            form = body.decode("utf-8", errors="replace") if method == "POST" else parts.query
            config_id = (parse_qs(form).get("colConfigId") or [""])[0]
            key = f"{method} {path} {config_id}"
            config = content.columns_config(config_id)
            return key, _Answer(200, config) if config is not None else _mast_error(f"Unknown colConfigId: {config_id!r}")
        if path in ("/api/v0.1/Download/file", "/portal/Download/file"):
            return key, self._download(method, parts.query, content)
        if method not in ("GET", "HEAD"):
            return key, _mast_error(f"{method} is not supported on {path}", 405)
        if path in ("/", "/health"):
            return key, _Answer(200, json.dumps({"status": "OK", "serving": content.label,
                                                 "faults": faults.config.model_dump()}).encode())
        if path == "/hst/proposal-abstracts/catalog.txt":
            return key, self._document(content.document("catalog"), "text/plain; charset=utf-8", "catalog.txt")
        match = _APT.match(path)
        if match:
            return key, self._document(content.document("apt", match.group(1)), "application/xml", path)
        match = _LEGACY.match(path)
        if match:
            pid, kind = match.groups()
            ctype = "application/xml" if kind == "apt" else "text/plain; charset=iso-8859-1"
            return key, self._document(content.document(kind, pid), ctype, path)
        return key, _not_found(path)

    @staticmethod
    def _document(data: bytes | None, content_type: str, what: str) -> _Answer:
        return _not_found(what) if data is None else _Answer(200, data, content_type)

    @staticmethod
    def _download(method: str, query: str, content: ArchiveContent) -> _Answer:
        if method not in ("GET", "HEAD"):
            return _mast_error(f"{method} is not supported for downloads", 405)
        uris = parse_qs(query, keep_blank_values=True).get("uri")
        if not uris or not uris[0]:
            return _mast_error("Missing 'uri' parameter", 400)
        uri = uris[0]
        if (not uri.startswith("mast:") or ".." in uri or "\\" in uri or "\x00" in uri or len(uri) > 1024
                or "//" in uri[5:]):
            return _mast_error(f"Invalid uri {uri[:200]!r}: expected mast:<collection>/product/<file>", 400)
        data = content.file(uri)
        if data is None:
            return _not_found(uri)
        suffix = Path(uri).suffix.lower()
        return _Answer(200, data, _CONTENT_TYPES.get(suffix, "application/octet-stream"),
                       {"Content-Disposition": f'attachment; filename="{uri.rsplit("/", 1)[-1]}"'})


def _load_content(sky_dir: str | Path | None, replay_dir: str | Path | None) -> ArchiveContent:
    if sky_dir is not None and replay_dir is not None:
        raise InputError("serve a sky or a replay directory, not both")
    if sky_dir is not None:
        return load_sky_content(sky_dir)
    if replay_dir is not None:
        return load_replay_content(replay_dir)
    return ArchiveContent(label="empty archive")


class ArchiveServer:
    """A MAST/STScI-compatible server over a synthetic sky or recorded answers, in-process or not.

        with ArchiveServer(sky_dir="demo-sky") as server:
            configure_astroquery(server.url)   # before astroquery.mast is imported
            ...
    """

    def __init__(self, sky_dir: str | Path | None = None, replay_dir: str | Path | None = None,
                 faults: FaultConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        if not (0 <= int(port) <= 65535):
            raise InputError(f"port must be 0..65535, got {port}")
        self.host, self.port = host, int(port)
        self._state: tuple[ArchiveContent, FaultInjector] = (
            _load_content(sky_dir, replay_dir), FaultInjector(faults or FaultConfig()))
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._log: deque[tuple[str, str, int]] = deque(maxlen=200_000)
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the archive server is not started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ArchiveServer:
        if self._httpd is not None:
            return self
        handler = type("ArchiveHandler", (_Handler,), {"archive": self})
        try:
            self._httpd = _HTTPServer((self.host, self.port), handler)
        except OSError as err:
            raise InputError(f"cannot listen on {self.host}:{self.port}: {err.strerror or err}") from None
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"archive-{self.port}", daemon=True)
        self._thread.start()
        log.info("archive serving %s at %s", self.content.label, self.url)
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:  # end idle keep-alive connections too, so nothing answers after stop()
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def serve_until_interrupted(self) -> None:
        """Block (for the CLI) until KeyboardInterrupt; then stop."""
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ runtime configuration

    @property
    def content(self) -> ArchiveContent:
        return self._state[0]

    @property
    def faults(self) -> FaultConfig:
        return self._state[1].config

    @property
    def faults_injected(self) -> dict[str, int]:
        """Faults injected since the knobs were last set, by kind (fail, truncate, executing, spike)."""
        return dict(self._state[1].injected)

    def configure(self, *, sky_dir: str | Path | None = _UNSET, replay_dir: str | Path | None = _UNSET,
                  faults: FaultConfig | None = _UNSET) -> None:
        """Swap what a running server serves. Passing sky_dir or replay_dir (None for neither) replaces the
        content; passing faults replaces the knobs (and restarts their deterministic sequence)."""
        content, injector = self._state
        if sky_dir is not _UNSET or replay_dir is not _UNSET:
            content = _load_content(None if sky_dir is _UNSET else sky_dir, None if replay_dir is _UNSET else replay_dir)
        if faults is not _UNSET:
            injector = FaultInjector(faults or FaultConfig())
        self._state = (content, injector)  # one assignment: a request sees the old pair or the new one

    # ------------------------------------------------------------ request log

    @property
    def request_log(self) -> list[tuple[str, str, int]]:
        return list(self._log)

    def clear_log(self) -> None:
        self._log.clear()

    def _record(self, method: str, path: str, status: int) -> None:
        self._log.append((method, path, status))

    def _track(self, conn: socket.socket, opened: bool) -> None:
        with self._lock:
            (self._connections.add if opened else self._connections.discard)(conn)
