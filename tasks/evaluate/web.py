"""A small read-only search page: a query box, the top previews with proposal titles and MAST links.

Safety, because the page shows text the archive (and the user) supplied:
- everything interpolated into HTML is escaped (html.escape, quote=True), URLs are built with
  urllib.parse.quote, and a Content-Security-Policy forbids scripts outright;
- previews are served only by their sha256 key, validated by pattern and by membership in the
  index, then read from the content-addressed image store: no path ever comes from the request;
- queries are bounded in length and k in range; only GET routes exist;
- it binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import html
import logging
import re
import socket
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from schemas.errors import InputError
from storage import ImageStore
from tasks.evaluate.index import SearchHit
from tasks.evaluate.search import MAX_QUERY_CHARS, Searcher

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_K = 12
MAX_WEB_K = 50
_PREVIEW = re.compile(r"^([0-9a-f]{64})\.jpg$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
form{margin-bottom:1rem} input[type=search]{width:28rem;max-width:90%;padding:.4rem;font-size:1rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:1rem}
figure{margin:0;background:#fff;border:1px solid #ddd;padding:.5rem;border-radius:4px}
figure img{width:100%;height:auto;display:block;background:#eee}
figcaption{font-size:.85rem;margin-top:.4rem} .err{color:#a00} .meta{color:#666;font-size:.8rem}
"""


def mast_url(hit: SearchHit) -> str:
    """The observation on MAST (by dataset name), or its proposal's program page without one."""
    if hit.obs_id:
        return "https://mast.stsci.edu/search/ui/#/hst/results?" + urlencode({"data_set_name": hit.obs_id})
    return program_url(hit.proposal_id)


def program_url(proposal_id: str) -> str:
    return "https://www.stsci.edu/hst-program-info/program/?" + urlencode({"program": proposal_id})


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_page(query: str = "", k: int = DEFAULT_K, hits: list[SearchHit] | None = None, error: str = "",
                index_name: str = "") -> str:
    cards = []
    for hit in hits or []:
        cards.append(
            "<figure class=\"hit\">"
            f"<a href=\"{_e(mast_url(hit))}\" rel=\"noopener noreferrer\">"
            f"<img src=\"/preview/{quote(hit.preview_sha256)}.jpg\" alt=\"preview of {_e(hit.obs_id or hit.obsid)}\" "
            "width=\"512\" height=\"512\" loading=\"eager\"></a>"
            f"<figcaption><a class=\"title\" href=\"{_e(program_url(hit.proposal_id))}\" "
            f"rel=\"noopener noreferrer\">{_e(hit.title or 'untitled proposal')}</a>"
            f"<div class=\"meta\">proposal {_e(hit.proposal_id)} &middot; obs {_e(hit.obs_id or hit.obsid)}"
            f" &middot; {_e(hit.target)} &middot; score {hit.score:.3f}</div></figcaption></figure>"
        )
    if error:
        body = f"<p class=\"err\" id=\"error\">{_e(error)}</p>"
    elif hits is not None and not hits:
        body = "<p id=\"empty\">No results.</p>"
    elif hits:
        body = f"<p id=\"summary\">Top {len(hits)} for <q>{_e(query)}</q></p><div class=\"grid\">{''.join(cards)}</div>"
    else:
        body = "<p>Describe what to look for, e.g. <q>globular cluster</q> or <q>strong lensing</q>.</p>"
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>HubbleCLIP search</title><style>{_STYLE}</style></head><body>"
        "<h1>Search the Hubble archive</h1>"
        "<form method=\"get\" action=\"/\" role=\"search\">"
        f"<input type=\"search\" name=\"q\" id=\"q\" value=\"{_e(query)}\" maxlength=\"{MAX_QUERY_CHARS}\" "
        "placeholder=\"globular cluster\" autofocus>"
        f"<input type=\"hidden\" name=\"k\" value=\"{int(k)}\"> <button type=\"submit\" id=\"go\">Search</button></form>"
        f"{body}<p class=\"meta\">index {_e(index_name)}</p></body></html>"
    )


def create_app(searcher: Searcher) -> FastAPI:
    """The search app over one index and its model (read-only)."""
    app = FastAPI(title="HubbleCLIP search", docs_url=None, redoc_url=None, openapi_url=None)
    images = ImageStore(searcher.index.images_root)

    @app.middleware("http")
    async def _headers(request, call_next):
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    def _search(q: str, k: int) -> list[SearchHit]:
        if not 1 <= k <= MAX_WEB_K:
            raise InputError(f"k must be between 1 and {MAX_WEB_K}, got {k}")
        return searcher.search(q, k)

    @app.get("/", response_class=HTMLResponse)
    def page(q: str = "", k: str = str(DEFAULT_K)) -> HTMLResponse:
        # Taken as text and checked here, so a bad k or an overlong query gets this page with its
        # error, not FastAPI's JSON 422 (the API route below keeps the typed, JSON form).
        if not q.strip():
            return HTMLResponse(render_page(index_name=searcher.index.name))
        try:
            if not re.fullmatch(r"[0-9]{1,6}", k.strip()):  # ASCII digits: int() refuses '²' and huge strings
                raise InputError(f"k must be a whole number between 1 and {MAX_WEB_K}, got {k[:20]!r}")
            size = int(k)
            hits = _search(q, size)
        except InputError as err:
            return HTMLResponse(render_page(q[:MAX_QUERY_CHARS], DEFAULT_K, error=str(err),
                                            index_name=searcher.index.name), status_code=400)
        return HTMLResponse(render_page(q, size, hits, index_name=searcher.index.name))

    @app.get("/api/search")
    def api_search(q: str = Query(max_length=4 * MAX_QUERY_CHARS), k: int = DEFAULT_K) -> JSONResponse:
        try:
            hits = _search(q, k)
        except InputError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        rows = [h.to_dict() | {"preview_url": f"/preview/{h.preview_sha256}.jpg", "mast_url": mast_url(h)}
                for h in hits]
        for row in rows:
            row.pop("preview_path", None)  # server paths stay on the server
        return JSONResponse({"query": q, "index": searcher.index.name, "results": rows})

    @app.get("/preview/{filename}")
    def preview(filename: str) -> Response:
        match = _PREVIEW.match(filename)
        if not match or not searcher.index.has_preview(match.group(1)):
            return Response("not found", status_code=404, media_type="text/plain")
        try:
            data = images.get(match.group(1))
        except InputError:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400, immutable"})

    @app.get("/healthz")
    def health() -> dict[str, object]:
        return {"ok": True, "index": searcher.index.name, "items": len(searcher.index)}

    return app


def listen_socket(host: str = DEFAULT_HOST, port: int = 8000) -> socket.socket:
    """The page's bound socket, or an InputError naming the address (port in use, no such
    interface) before anything is printed or served: uvicorn's own bind error is a log line."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise InputError(f"cannot serve the search page on {host}:{port}: {err.strerror or err}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise InputError(f"cannot serve the search page on {host}:{port}: {err.strerror or err}") from None
    return sock


def serve(searcher: Searcher, sock: socket.socket) -> None:
    """Run the page with uvicorn on `sock` (from listen_socket) until interrupted."""
    import uvicorn

    host = sock.getsockname()[0]
    if host not in ("127.0.0.1", "::1"):
        log.warning("serving search on %s: reachable from other machines", host)
    uvicorn.Server(uvicorn.Config(create_app(searcher), log_level="warning")).run(sockets=[sock])
