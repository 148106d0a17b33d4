"""Bad requests get MAST-shaped errors; the server neither crashes nor hangs, and keeps answering."""

from __future__ import annotations

import json
import socket
from urllib.parse import quote, urlsplit

import pytest
import requests

from tasks.archive.server import ArchiveServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _invoke(server: ArchiveServer, text: str) -> requests.Response:
    return requests.post(f"{server.url}/api/v0/invoke", data="request=" + quote(text), headers=FORM, timeout=10)


def _healthy(server: ArchiveServer) -> bool:
    return requests.get(f"{server.url}/health", timeout=10).json()["status"] == "OK"


@pytest.mark.parametrize(
    ("request_text", "message"),
    [
        ("{not json", "Malformed request JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"service": "Mast.Nope", "params": {}}), "Unknown service"),
        (json.dumps({"params": {}}), "no service"),
        (json.dumps({"service": "Mast.Caom.Filtered", "params": {"filters": [{"paramName": "colour", "values": ["x"]}]}}),
         "Unknown filter"),
        (json.dumps({"service": "Mast.Caom.Filtered",
                     "params": {"filters": [{"paramName": "t_min", "values": [{"min": "soon", "max": 1}]}]}}), "Invalid min"),
        (json.dumps({"service": "Mast.Caom.Filtered", "params": {"filters": "obs_collection=HST"}}), "must be a list"),
        (json.dumps({"service": "Mast.Caom.Filtered", "params": {"columns": "nope"}}), "Invalid column"),
        (json.dumps({"service": "Mast.Caom.Filtered", "params": {}, "pagesize": 0}), "positive"),
        (json.dumps({"service": "Mast.Caom.Filtered", "params": {}, "format": "votable"}), "Unsupported format"),
        (json.dumps({"service": "Mast.Caom.Products", "params": {}}), "needs params.obsid"),
    ],
)
def test_bad_invoke_requests_get_mast_errors(archive: ArchiveServer, request_text: str, message: str) -> None:
    response = _invoke(archive, request_text)
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "ERROR" and message in answer["msg"]
    assert _healthy(archive)


def test_clients_see_the_errors_as_astroquery_errors(archive: ArchiveServer) -> None:
    from astroquery.exceptions import InvalidQueryError, RemoteServiceError
    from astroquery.mast import Observations

    with pytest.raises(RemoteServiceError, match="varchar to bigint"):
        Observations.get_product_list("J7WJ010AQ")  # obs_id where MAST wants obsid
    with pytest.raises(InvalidQueryError, match="does not exist"):
        Observations.query_criteria(colour="red")  # validated against the column config we serve
    missing = requests.post(f"{archive.url}/api/v0/invoke", data="nothing=here", headers=FORM, timeout=10)
    assert missing.json()["status"] == "ERROR" and "Missing 'request'" in missing.json()["msg"]
    unknown = requests.post(f"{archive.url}/portal/Mashup/Mashup.asmx/columnsconfig", data="colConfigId=Mast.Nope",
                            headers=FORM, timeout=10)
    assert unknown.json()["status"] == "ERROR"


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        (None, 400),
        ("", 400),
        ("http://example.com/x.jpg", 400),
        ("mast:HST/product/../../sky.json", 400),
        ("mast:HST/product/%2e%2e/%2e%2e/ground_truth.json", 400),
        ("mast:HST/product/..\\ground_truth.json", 400),
        ("mast:HST/product//etc/passwd", 400),
        ("mast:HST/product/no_such_file.jpg", 404),
    ],
)
def test_bad_download_uris(archive: ArchiveServer, uri: str | None, status: int) -> None:
    query = "" if uri is None else "?uri=" + uri
    for method in ("HEAD", "GET"):
        response = requests.request(method, f"{archive.url}/api/v0.1/Download/file{query}", timeout=10)
        assert response.status_code == status
        if method == "GET":
            assert response.json()["status"] == "ERROR"


def _raw(server: ArchiveServer, payload: bytes) -> bytes:
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
        conn.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_malformed_http_never_hurts_the_server(archive: ArchiveServer) -> None:
    assert b"400" in _raw(archive, b"garbage\r\n\r\n")
    assert _raw(archive, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 501")
    huge = _raw(archive, b"POST /api/v0/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n")
    assert b" 413 " in huge.split(b"\r\n")[0]
    bad_length = _raw(archive, b"POST /api/v0/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
    assert b" 400 " in bad_length.split(b"\r\n")[0]
    assert requests.put(f"{archive.url}/api/v0/invoke", data="x", timeout=10).status_code == 405
    assert requests.get(f"{archive.url}/no/such/endpoint", timeout=10).json()["status"] == "ERROR"
    # a client that stalls mid-request holds only its own thread
    parts = urlsplit(archive.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as stalled:
        stalled.sendall(b"POST /api/v0/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\nrequest=")
        assert _healthy(archive)
    assert _healthy(archive)
