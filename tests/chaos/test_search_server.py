"""The search server over the pipeline's own index, attacked: it stays read-only, local by default,
inert to markup, closed to paths, and bounded; no request makes it answer 500.

(tests/tasks/evaluate/test_web.py checks the page itself on a hand-made index; these go wider.)
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos

TRAVERSALS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
              "%252e%252e%252fetc%252fpasswd", "..%5c..%5cwindows%5cwin.ini", "....//....//etc/passwd",
              "%2Fetc%2Fpasswd", "{sha}.jpg%00.png", "{sha}.jpg/..", "{sha}.jpg%2F..%2F..%2Fmanifest.json",
              "{sha_upper}.jpg", "{sha}.JPG", "{sha}", " {sha}.jpg",
              "{unindexed}.jpg", "x" * 5000 + ".jpg"]


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def served(pipeline_reference, tmp_path_factory):
    import shutil

    from fastapi.testclient import TestClient

    from storage import DataLayout, ImageStore
    from tasks.evaluate.models import search_model_loader
    from tasks.evaluate.search import open_searcher
    from tasks.evaluate.web import create_app

    root = tmp_path_factory.mktemp("served") / "data"
    shutil.copytree(pipeline_reference.after["evaluate"], root)
    unindexed = ImageStore(DataLayout(str(root)).images).put(b"\xff\xd8 an image that is in no index")
    searcher = open_searcher(str(root), search_model_loader, device="cpu")
    client = TestClient(create_app(searcher), raise_server_exceptions=False)
    return root, client, searcher, unindexed


def test_no_request_changes_the_data_root(served, chaos_figures):
    root, client, _, _ = served
    before = _tree_digest(root)
    statuses = set()
    for path in ("/", "/api/search", "/preview/x.jpg", "/healthz"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = client.request(method, path, params={"q": "stars"}, content=b"q=stars")
            statuses.add(response.status_code)
            assert response.status_code in (404, 405), (method, path, response.status_code)
    assert _tree_digest(root) == before  # read-only: not one byte written
    chaos_figures.bad_inputs.append("write methods against the search server")


def test_previews_are_closed_to_paths(served, chaos_figures):
    _, client, searcher, unindexed = served
    sha = searcher.search("galaxy", 1)[0].preview_sha256
    assert client.get(f"/preview/{sha}.jpg").status_code == 200
    for template in TRAVERSALS:
        path = template.format(sha=sha, sha_upper=sha.upper(), unindexed=unindexed)
        response = client.get(f"/preview/{path}")
        assert response.status_code in (404, 405, 422), (path, response.status_code)
        assert b"root:" not in response.content and b"[extensions]" not in response.content
    chaos_figures.bad_inputs.append("path traversal on the image route (16 forms)")


@pytest.mark.parametrize("k", ["0", "-1", "51", "101", str(10**12), "1e3", "abc", "", "NaN"])
def test_k_is_bounded_on_every_route(served, k):
    _, client, _, _ = served
    for route in ("/", "/api/search"):
        response = client.get(route, params={"q": "nebula", "k": k})
        assert 400 <= response.status_code < 500, (route, k, response.status_code)


def test_queries_are_bounded_and_hostile_text_stays_text(served, chaos_figures):
    _, client, _, _ = served
    hostile = ['"><script>alert(document.cookie)</script>', "<img src=x onerror=alert(1)>",
               "javascript:alert(1)", "{{7*7}} ${7*7} %s%s%s", "' OR 1=1 --", "\u202egnp.exe", "\x00\x1b[31m",
               "🔭" * 50]
    for query in hostile:
        page = client.get("/", params={"q": query})
        assert page.status_code in (200, 400), (query, page.status_code)
        body = page.text
        assert "<script>" not in body and "onerror=alert" not in body.replace("onerror=alert(1)&gt;", "")
        assert "<img src=x" not in body
        api = client.get("/api/search", params={"q": query, "k": 3})
        assert api.status_code in (200, 400) and api.headers["content-type"].startswith("application/json")
    for length in (301, 1200, 20_000):
        for route in ("/", "/api/search"):
            response = client.get(route, params={"q": "x" * length})
            assert 400 <= response.status_code < 500, (route, length, response.status_code)
    chaos_figures.bad_inputs += ["XSS and template payloads in the search query", "oversized search query",
                                 "out-of-range k"]


def test_it_listens_on_this_machine_only_by_default():
    from tasks.evaluate import web

    assert inspect.signature(web.listen_socket).parameters["host"].default == "127.0.0.1"  # binds for serve()
    from flows.commands import evaluate as commands

    source = inspect.getsource(commands)
    assert '"0.0.0.0"' not in source and "'0.0.0.0'" not in source
