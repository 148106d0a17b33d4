"""A vLLM OpenAI-compatible server (`vllm serve MODEL`) through Outlines, many requests in flight.

This is how summarization scales past one machine: the pipeline needs only the `openai` client,
and vLLM (with its exact torch pins) lives in its own container. Outlines' `from_vllm` sends the
JSON schema as `extra_body={"structured_outputs": {"json": ...}}`, the form vLLM >= 0.12 reads.
A server that ignores that field (older vLLM; outlines 1.3.0 sent the removed `guided_json`)
still answers HTTP 200 with free text, so every answer is parsed and a non-JSON one stops the
run (tasks/summarize/generate.py) instead of being accepted.

`concurrency` requests are kept in flight from one thread pool per backend, shared by every batch
this process runs side by side, so `concurrency` bounds the process; the server batches them
(continuous batching), so throughput grows with concurrency until its KV cache is full.

A request the server rejects (a 4xx, e.g. one abstract over the model's context length) fails
that abstract only: it comes back as a `request_rejected` output, is retried like any failure and
then quarantined with the server's message. Only when every request of a call of two or more is
rejected, before the server has accepted any request, is it the
configuration's fault (a wrong model name, an unsupported schema) and the run stops with that error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.errors import InputError, PermanentRemoteError, RemoteError, missing_extra
from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_json_schema
from tasks.secrets import get_secret
from tasks.summarize.backends.base import MIN_OUTPUTS_TO_BLAME_BACKEND, RawOutput
from tasks.summarize.prompt import PromptTemplate, load_prompt

log = logging.getLogger(__name__)


def _as_hubbleclip_error(err: Exception, base_url: str) -> Exception:
    """Outlines' provider errors say whether they are transient; keep that, in our types."""
    retryable = getattr(err, "retryable", None)
    if retryable is None:  # not normalised by Outlines: a raw openai / httpx error
        import openai

        retryable = isinstance(err, openai.APIConnectionError | openai.APITimeoutError | openai.RateLimitError
                                     | openai.InternalServerError)
    message = f"vLLM server at {base_url}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return RemoteError(message) if retryable else PermanentRemoteError(message)


MAX_DETAIL_CHARS = 200  # the server's message kept with a rejected abstract


class OpenAIBackend:
    name = "openai"
    deterministic = False

    def __init__(self, params: SummarizeParams, *, prompt: PromptTemplate, limits: SummaryLimits):
        try:
            import openai
        except ImportError:
            raise missing_extra("openai", "openai", "the 'openai' summarizer backend") from None
        import outlines
        from outlines.types import JsonSchema

        self.base_url = params.base_url
        self.prompt = prompt
        self.limits = limits
        self.concurrency = params.concurrency
        # One pool for the backend's life: batches running side by side share it, so at most
        # `concurrency` requests are in flight from this process, not that many per batch.
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-request")
        # Set once the server answers a request or names its model: it and the model name work.
        self.accepted_any = False
        # The client's own retries cover single dropped connections; the stage retries the rest.
        # The key comes from the environment (a Secret block under Prefect), never from params.
        self.client = openai.OpenAI(base_url=params.base_url, api_key=get_secret("vllm_api_key") or "EMPTY",
                                    timeout=params.request_timeout_s, max_retries=2)
        self.model_id = params.model or self._served_model()
        self.model = outlines.from_vllm(self.client, self.model_id)
        self.output_type = JsonSchema(summary_json_schema(limits))

    def _served_model(self) -> str:
        """The server's model when none was named (`vllm serve` serves exactly one)."""
        try:
            models = [m.id for m in self.client.models.list()]
        except Exception as err:  # noqa: BLE001 - any failure here is the server's
            raise _as_hubbleclip_error(err, self.base_url) from None
        if not models:
            raise InputError(f"the server at {self.base_url} serves no model; pass --model")
        # Not `accepted_any`: naming its model proves the server and the name, not that it takes
        # our schema; a server that rejects every request must still stop the run.
        return models[0]

    def _request(self, abstract: str, sampling: SamplingConfig) -> str:
        return self.model(self.prompt.render(abstract, self.limits), self.output_type,
                          max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                          top_p=sampling.top_p, seed=sampling.seed)

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        def attempt(abstract: str) -> str | Exception:
            try:
                return self._request(abstract, sampling)
            except Exception as err:  # noqa: BLE001 - classified below, per request
                return _as_hubbleclip_error(err, self.base_url)

        results: list[Any] = list(self.pool.map(attempt, abstracts))
        errors = [r for r in results if isinstance(r, Exception)]
        rejected = [e for e in errors if isinstance(e, PermanentRemoteError)]
        transient = [e for e in errors if not isinstance(e, PermanentRemoteError)]
        if (len(results) >= MIN_OUTPUTS_TO_BLAME_BACKEND and len(rejected) == len(results)
                and not self.accepted_any):
            raise rejected[0]  # every request refused by a server that never accepted one: misconfigured, stop
        if transient and len(errors) == len(results):
            raise transient[0]  # down or overloaded: the caller retries the whole call
        if len(errors) < len(results):
            self.accepted_any = True
        if errors:
            log.warning("%d of %d requests to %s failed (%d rejected); they will be retried", len(errors),
                        len(results), self.base_url, len(rejected))
        return [_as_output(r) for r in results]

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()


def _as_output(result: str | Exception) -> RawOutput:
    """One request's answer, or why it has none: rejected by the server (4xx) or failed in transit."""
    if isinstance(result, PermanentRemoteError):
        return RawOutput("", failure="request_rejected", detail=str(result)[:MAX_DETAIL_CHARS])
    if isinstance(result, Exception):
        return RawOutput("", failure="request_failed", detail=str(result))
    return RawOutput(result)


def create_openai_backend(params: SummarizeParams) -> OpenAIBackend:
    return OpenAIBackend(params, prompt=load_prompt(params.prompt_version), limits=params.limits)
