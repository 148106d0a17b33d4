"""One interface for every summarizer backend, and the explicit registry that names them.

A backend turns abstracts into raw JSON text under the `Summary` grammar; it never parses or
retries (tasks/summarize/generate.py does, the same way for all). Heavy dependencies (torch,
transformers, Outlines, vLLM, openai) are imported inside each backend's factory, so importing
this package is cheap and never imports vLLM.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from schemas.errors import InputError
from schemas.summary import SamplingConfig, SummarizeParams


@dataclass(frozen=True)
class RawOutput:
    """What a backend produced for one abstract: text, or why there is none."""

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    hit_token_limit: bool = False
    failure: str = ""  # a reason when the backend produced nothing usable (e.g. 'request_failed')
    detail: str = ""


# The fewest outputs one call must hold before "all of them failed the same way" may mean the
# backend is misconfigured (a server that rejects every request, a schema that was ignored) and
# stop the run. One output failing says only that its abstract is odd (an over-long one; a
# `--retry-failed` run or a run's last batch may send just that one), so it is quarantined instead.
MIN_OUTPUTS_TO_BLAME_BACKEND = 2


@runtime_checkable
class SummarizerBackend(Protocol):
    """Summarize abstracts. `generate` returns one RawOutput per abstract, in order."""

    name: str
    model_id: str
    deterministic: bool  # True: the same abstract always gives the same output, so retrying is pointless

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]: ...

    def close(self) -> None: ...


BackendFactory = Callable[[SummarizeParams], SummarizerBackend]


def _lazy(module: str, factory: str) -> BackendFactory:
    """A factory that imports its module only when a backend of that kind is created."""

    def create(params: SummarizeParams) -> SummarizerBackend:
        return getattr(importlib.import_module(module), factory)(params)

    create.__qualname__ = f"{module}.{factory}"
    return create


BACKENDS: dict[str, BackendFactory] = {
    "extractive": _lazy("tasks.summarize.backends.extractive", "create_extractive_backend"),
    "transformers": _lazy("tasks.summarize.backends.transformers_backend", "create_transformers_backend"),
    "vllm": _lazy("tasks.summarize.backends.vllm_backend", "create_vllm_backend"),
    "openai": _lazy("tasks.summarize.backends.openai_backend", "create_openai_backend"),
}


def list_backends() -> list[str]:
    return sorted(BACKENDS)


def resolve_backend(name: str) -> BackendFactory:
    """The factory registered under `name`; a one-line error listing the names otherwise."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise InputError(f"unknown summarizer backend {name!r}; choose one of: {', '.join(list_backends())}")
    return factory


def create_backend(params: SummarizeParams) -> SummarizerBackend:
    """The backend `params.backend` names, configured by `params`."""
    return resolve_backend(params.backend)(params)
