"""The search page over HTTP (FastAPI's test client): results, escaping, previews, bounds."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tasks.evaluate.search import MAX_QUERY_CHARS
from tasks.evaluate.web import create_app, mast_url
from tests.tasks.evaluate.conftest import XSS_TITLE


@pytest.fixture(scope="module")
def client(indexed_searcher):
    return TestClient(create_app(indexed_searcher))


def test_page_lists_previews_titles_and_mast_links(client, indexed_searcher):
    page = client.get("/", params={"q": "globular cluster", "k": 5})
    assert page.status_code == 200
    body = page.text
    assert body.count('<figure class="hit">') == 5
    assert "https://mast.stsci.edu/search/ui/#/hst/results?data_set_name=j8pu" in body
    assert "Content-Security-Policy" in page.headers and "script-src" not in page.headers["Content-Security-Policy"]
    hits = indexed_searcher.search("globular cluster", 5)
    assert f"/preview/{hits[0].preview_sha256}.jpg" in body


def test_user_input_and_archive_text_are_escaped(client):
    payload = '"><script>alert(1)</script>'
    body = client.get("/", params={"q": payload, "k": 12}).text
    assert "<script>" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body  # a hostile proposal title, inert
    assert XSS_TITLE not in body


def test_previews_are_served_only_for_indexed_keys(client, indexed_searcher):
    sha = indexed_searcher.search("dust", 1)[0].preview_sha256
    ok = client.get(f"/preview/{sha}.jpg")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/jpeg" and ok.content[:2] == b"\xff\xd8"
    for bad in (f"{'0' * 64}.jpg", "..%2F..%2Fetc%2Fpasswd", "../../etc/passwd", f"{sha}.png", sha.upper() + ".jpg"):
        assert client.get(f"/preview/{bad}").status_code == 404, bad


def test_bounds_and_read_only(client):
    assert client.get("/", params={"q": "x" * (MAX_QUERY_CHARS + 1)}).status_code == 400
    long = client.get("/", params={"q": "x" * 10_000})  # the page's own error, not FastAPI's JSON 422
    assert long.status_code == 400 and long.headers["content-type"].startswith("text/html")
    bad_k = client.get("/", params={"q": "dust", "k": "abc"})
    assert bad_k.status_code == 400 and "k must be a whole number" in bad_k.text
    assert client.get("/", params={"q": "dust", "k": "0"}).status_code == 400
    for odd in ("\u00b2", "1" * 5000):  # digits to str.isdigit, not to int()
        assert client.get("/", params={"q": "dust", "k": odd}).status_code == 400
    assert client.get("/api/search", params={"q": "dust", "k": 1000}).status_code == 400
    assert client.get("/api/search", params={"q": "   "}).json()["error"].startswith("empty query")
    assert client.post("/", data={"q": "dust"}).status_code == 405
    assert client.get("/docs").status_code == 404


def test_json_api_returns_results_without_server_paths(client):
    data = client.get("/api/search", params={"q": "dwarf galaxy", "k": 3}).json()
    assert len(data["results"]) == 3
    first = data["results"][0]
    assert {"obsid", "proposal_id", "title", "score", "preview_url", "mast_url"} <= set(first)
    assert "preview_path" not in first


def test_mast_link_falls_back_to_the_program_page(indexed_searcher):
    hit = indexed_searcher.search("dust", 1)[0]
    assert mast_url(hit).endswith(f"data_set_name={hit.obs_id}")
    from dataclasses import replace

    assert mast_url(replace(hit, obs_id="")) == f"https://www.stsci.edu/hst-program-info/program/?program={hit.proposal_id}"


def test_the_page_is_served_on_the_listen_socket_and_a_taken_port_is_an_input_error(indexed_searcher):
    import threading
    import time
    import urllib.request

    import uvicorn

    from schemas.errors import InputError
    from tasks.evaluate.web import listen_socket

    sock = listen_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(indexed_searcher), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200 and b"<form" in response.read()
        with pytest.raises(InputError, match=rf"cannot serve the search page on 127.0.0.1:{port}: Address already in use"):
            listen_socket("127.0.0.1", port)  # was: the URL printed, then uvicorn's [Errno 98] log line
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    with pytest.raises(InputError, match="cannot serve the search page on no-such-host.invalid:8000"):
        listen_socket("no-such-host.invalid", 8000)
