"""A vLLM OpenAI-compatible server (`vllm serve MODEL`) through Outlines, many requests in flight.

This is how summarization scales past one machine: the pipeline needs only the `openai` client,
and vLLM (with its exact torch pins) lives in its own container. Outlines' `from_vllm` sends the
JSON schema as `extra_body={"structured_outputs": {"json": ...}}`, the form vLLM >= 0.12 reads.
A server that ignores that field (older vLLM; outlines 1.3.0 sent the removed `guided_json`)
still answers HTTP 200 with free text, so every answer is parsed and a non-JSON one stops the
run (tasks/summarize/generate.py) instead of being accepted.

`concurrency` requests are kept in flight from a thread pool; the server batches them
(continuous batching), so throughput grows with concurrency until its KV cache is full.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from schemas.errors import InputError, PermanentRemoteError, RemoteError
from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_json_schema
from tasks.secrets import get_secret
from tasks.summarize.backends.base import RawOutput, missing_extra
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

        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(abstracts)))) as pool:
            results: list[Any] = list(pool.map(attempt, abstracts))
        errors = [r for r in results if isinstance(r, Exception)]
        permanent = [e for e in errors if isinstance(e, PermanentRemoteError)]
        if permanent:
            raise permanent[0]  # a 4xx is the request's fault (schema unsupported, unknown model): stop
        if errors and len(errors) == len(results):
            raise errors[0]  # the server is down or overloaded: let the caller retry the whole call
        if errors:
            log.warning("%d of %d requests to %s failed; they will be retried", len(errors), len(results), self.base_url)
        return [RawOutput("", failure="request_failed", detail=str(r)) if isinstance(r, Exception) else RawOutput(r)
                for r in results]

    def close(self) -> None:
        self.client.close()


def create_openai_backend(params: SummarizeParams) -> OpenAIBackend:
    return OpenAIBackend(params, prompt=load_prompt(params.prompt_version), limits=params.limits)
