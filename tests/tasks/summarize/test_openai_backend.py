"""The `openai` backend against a local OpenAI-compatible endpoint that behaves like `vllm serve`.

The endpoint (stdlib http.server on 127.0.0.1, port 0) answers with schema-shaped JSON only when
the request carries the JSON schema under `structured_outputs` (vLLM >= 0.12); otherwise it does
what an older server did: ignore the constraint and answer free text with HTTP 200. The backend
must refuse that text, never accept it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from schemas.errors import PermanentRemoteError, RemoteError
from schemas.summary import SamplingConfig, SummarizeParams, summary_json_schema
from tasks.summarize.backends.openai_backend import OpenAIBackend, create_openai_backend
from tasks.summarize.generate import UnconstrainedOutputError, summarize_abstracts

SUMMARY = {"objects_and_phenomena": ["dark matter", "galaxy clusters"], "science_use_cases": ["mass mapping"]}
FREE_TEXT = "Sure! This proposal studies dark matter in merging galaxy clusters using lensing."


class FakeVLLMServer:
    """Records every request; `mode` picks the behaviour: honour | ignore | fail_first | cutoff | http400 | reject_long."""

    def __init__(self, mode: str = "honour", delay_s: float = 0.0):
        self.mode = mode
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": "served-8b-instruct", "object": "model", "created": 0, "owned_by": "vllm"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    number = len(server.requests)
                try:
                    time.sleep(server.delay_s)
                    self._answer(body, number)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, body: dict, number: int) -> None:
                if server.mode == "http400":
                    self._send(400, {"error": {"message": "structured_outputs: unsupported schema", "type": "BadRequest"}})
                    return
                if server.mode == "reject_long" and "LONG" in body["messages"][-1]["content"]:
                    self._send(400, {"error": {"message": "This model's maximum context length is 2048 tokens",
                                               "type": "BadRequestError"}})
                    return
                if server.mode == "fail_first" and number == 1:
                    self._send(503, {"error": {"message": "overloaded"}})
                    return
                constrained = isinstance(body.get("structured_outputs"), dict) and "json" in body["structured_outputs"]
                if server.mode == "ignore" or not constrained:
                    text = FREE_TEXT
                elif server.mode == "cutoff":
                    text = json.dumps(SUMMARY)[:25]
                else:
                    text = json.dumps(SUMMARY)
                self._send(200, {
                    "id": f"cmpl-{number}", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text, "refusal": None}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeVLLMServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request) -> Iterator[FakeVLLMServer]:
    mode, delay = getattr(request, "param", ("honour", 0.0))
    with FakeVLLMServer(mode, delay) as running:
        yield running


def _backend(server: FakeVLLMServer, **changes: object) -> OpenAIBackend:
    params = SummarizeParams(backend="openai", base_url=server.url, request_timeout_s=10, **changes)
    return create_openai_backend(params)


def test_requests_carry_the_json_schema_under_structured_outputs(server):
    backend = _backend(server, model="served-8b-instruct")
    outputs = backend.generate(["Merging clusters constrain dark matter."], SamplingConfig(max_new_tokens=200, seed=4))
    assert json.loads(outputs[0].text) == SUMMARY
    (request,) = server.requests
    assert request["structured_outputs"]["json"] == summary_json_schema()
    assert "guided_json" not in request  # the key vLLM >= 0.12 no longer reads
    assert request["model"] == "served-8b-instruct"
    assert (request["max_tokens"], request["temperature"], request["seed"]) == (200, 0.0, 4)
    assert "Merging clusters constrain dark matter." in request["messages"][-1]["content"]


def test_the_served_model_is_discovered_when_none_is_named(server):
    assert _backend(server).model_id == "served-8b-instruct"


# Each answer takes 0.3 s: long enough that a loaded machine still starts the next request meanwhile.
@pytest.mark.parametrize("server", [("honour", 0.3)], indirect=True)
def test_requests_are_concurrent_but_bounded(server):
    backend = _backend(server, model="m", concurrency=3)
    outcomes = summarize_abstracts(backend, [f"abstract {i} about dark matter" for i in range(10)],
                                   sampling=SamplingConfig())
    assert all(o.reason == "ok" for o in outcomes)
    assert len(server.requests) == 10
    assert 2 <= server.max_in_flight <= 3


@pytest.mark.parametrize("server", [("ignore", 0.0)], indirect=True)
def test_a_server_that_ignores_the_schema_is_refused(server):
    backend = _backend(server, model="m")
    with pytest.raises(UnconstrainedOutputError, match="not JSON"):
        summarize_abstracts(backend, ["We study dark matter."], sampling=SamplingConfig())


@pytest.mark.parametrize("server", [("cutoff", 0.0)], indirect=True)
def test_cut_off_answers_are_retried_with_new_seeds_then_reported(server):
    outcome = summarize_abstracts(_backend(server, model="m"), ["We study dark matter."], sampling=SamplingConfig(),
                                  max_attempts=3)[0]
    assert outcome.reason == "cut_off" and outcome.attempts == 3
    assert [r["seed"] for r in server.requests] == [0, 1, 2]


@pytest.mark.parametrize("server", [("fail_first", 0.0)], indirect=True)
def test_a_transient_server_error_is_retried(server):
    # The openai client retries the 503 itself; the answer then validates.
    (raw,) = _backend(server, model="m").generate(["We study dark matter."], SamplingConfig())
    assert json.loads(raw.text) == SUMMARY and len(server.requests) == 2


@pytest.mark.parametrize("server", [("http400", 0.0)], indirect=True)
def test_a_rejected_request_is_a_permanent_error(server):
    # Every request of a call refused, by a server that never accepted one: misconfigured, stop.
    with pytest.raises(PermanentRemoteError, match="BadRequest|unsupported schema"):
        _backend(server, model="m").generate(["We study dark matter.", "We map dust."], SamplingConfig())


@pytest.mark.parametrize("server", [("http400", 0.0)], indirect=True)
def test_a_call_of_one_rejected_request_fails_its_abstract_only(server):
    (raw,) = _backend(server, model="m").generate(["We study dark matter."], SamplingConfig())
    assert raw.failure == "request_rejected" and "unsupported schema" in raw.detail


@pytest.mark.parametrize("server", [("reject_long", 0.0)], indirect=True)
def test_retrying_the_one_over_long_abstract_in_a_fresh_process_quarantines_it(server):
    """`--retry-failed` re-sends just the rejected abstract, to a backend that has accepted nothing yet."""
    backend = _backend(server, model="m")
    assert not backend.accepted_any
    (outcome,) = summarize_abstracts(backend, ["a LONG abstract"], sampling=SamplingConfig(), max_attempts=3)
    assert (outcome.reason, outcome.attempts, outcome.summary) == ("request_rejected", 3, None)
    assert "maximum context length is 2048 tokens" in outcome.detail


@pytest.mark.parametrize("server", [("reject_long", 0.0)], indirect=True)
def test_a_model_lookup_does_not_excuse_a_server_that_rejects_every_request(server):
    """Naming its model proves the name, not that the server takes the schema: a whole call rejected stops."""
    backend = _backend(server)
    assert not backend.accepted_any and backend.model_id == "served-8b-instruct"
    with pytest.raises(PermanentRemoteError, match="maximum context length"):
        backend.generate(["a LONG abstract", "another LONG abstract"], SamplingConfig())


@pytest.mark.parametrize("server", [("reject_long", 0.0)], indirect=True)
def test_a_rejected_request_fails_its_abstract_only_and_is_quarantined_with_the_reason(server):
    """One abstract over the model's context length must not stop the batch (nor every rerun)."""
    backend = _backend(server, model="m", concurrency=4)
    abstracts = [f"abstract {i} about dark matter" for i in range(7)] + ["a LONG abstract"]
    outcomes = summarize_abstracts(backend, abstracts, sampling=SamplingConfig(), max_attempts=3)
    assert [o.reason for o in outcomes[:7]] == ["ok"] * 7
    rejected = outcomes[7]
    assert (rejected.reason, rejected.attempts, rejected.summary) == ("request_rejected", 3, None)
    assert "maximum context length is 2048 tokens" in rejected.detail and len(rejected.detail) <= 200
    # Retried with the others' seeds like any failure: alone in its retry calls, it is still not the
    # server's configuration that is wrong (the server accepted the other requests).
    assert [r["seed"] for r in server.requests if "LONG" in r["messages"][-1]["content"]] == [0, 1, 2]


@pytest.mark.parametrize("server", [("honour", 0.05)], indirect=True)
def test_concurrency_bounds_the_backend_not_each_batch(server):
    """Batches run side by side on one backend (the stage shares it): together at most `concurrency`."""
    backend = _backend(server, model="m", concurrency=3)
    # Counted in this process, where the bound is (the server's count races its own replies).
    lock, in_flight, peak, send = threading.Lock(), [0], [0], backend._request

    def counted(abstract, sampling):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return send(abstract, sampling)
        finally:
            with lock:
                in_flight[0] -= 1

    backend._request = counted
    batches = [[f"batch {b} abstract {i} about dark matter" for i in range(6)] for b in range(3)]
    results: list = []
    threads = [threading.Thread(target=lambda batch=batch: results.append(backend.generate(batch, SamplingConfig())))
               for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(raw.text for outputs in results for raw in outputs)
    assert 2 <= peak[0] <= 3
    backend.close()


def test_an_unreachable_server_is_a_retryable_error():
    params = SummarizeParams(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", request_timeout_s=2)
    backend = create_openai_backend(params)
    backend.client = backend.client.with_options(max_retries=0)
    backend.model.client = backend.client
    with pytest.raises(RemoteError):
        backend.generate(["We study dark matter."], SamplingConfig())
