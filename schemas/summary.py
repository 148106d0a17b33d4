"""The summary of one proposal abstract, the row the summaries table stores, and the flow's form.

The paper (paper-method.md section 2) turns each abstract into two short lists: objects and
phenomena, and science use cases. `Summary` is that output. Its JSON schema is what the
constrained generator compiles, so the limits below are enforced by the grammar while the model
writes, not only asked for in the prompt:

- 1 to `max_items` items per list (`minItems` / `maxItems`);
- each item a `pattern` of 1 to `max_words` words of at most `max_word_chars` characters, single
  spaces, no quotes, backslashes, commas or semicolons. The pattern bounds every string, so
  outlines_core's grammar is finite and an output with enough token budget always closes. (A
  `maxLength` beside the pattern would make outlines_core drop the pattern, so there is none.)
  Commas and semicolons are excluded because the caption joins items with them.
- `extra="forbid"`: `additionalProperties: false`, which llguidance-style backends need to stop a
  model appending keys until the token limit cuts it off.

Rules a grammar cannot say (no Hubble/HST/archive mentions) are validators: an output that breaks
them is retried with a new seed, then quarantined.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
    field_validator,
    model_validator,
)

from schemas.records import normalize_proposal_id, utcnow
from schemas.settings import default_data_root, default_vllm_url

SUMMARY_SCHEMA_VERSION = 1
DEFAULT_MAX_ITEMS = 5
DEFAULT_MAX_WORDS = 4
DEFAULT_MAX_WORD_CHARS = 24
CLIP_CONTEXT_TOKENS = 77

_WORD_FIRST = "A-Za-z0-9"
_WORD_REST = "A-Za-z0-9'+./()=<>~-"
# Whole words only: 'hubble constant' and 'HST' are out; 'the archive' is the telescope's, not science.
FORBIDDEN_MENTIONS = re.compile(r"\b(hubble|hst|space telescope|mast archive|archival data)\b", re.IGNORECASE)


def item_pattern(max_words: int, max_word_chars: int) -> str:
    """Regex for one list item: 1..max_words words, each 1..max_word_chars characters."""
    word = f"[{_WORD_FIRST}][{_WORD_REST}]{{0,{max_word_chars - 1}}}"
    return f"^{word}( {word}){{0,{max_words - 1}}}$"


class Summary(BaseModel):
    """Objects and phenomena; science use cases. What the LLM writes, under the grammar."""

    model_config = ConfigDict(extra="forbid")

    objects_and_phenomena: list[
        Annotated[str, StringConstraints(pattern=item_pattern(DEFAULT_MAX_WORDS, DEFAULT_MAX_WORD_CHARS))]
    ] = Field(min_length=1, max_length=DEFAULT_MAX_ITEMS,
              description="astrophysical object classes and phenomena the observations show, most relevant first")
    science_use_cases: list[
        Annotated[str, StringConstraints(pattern=item_pattern(DEFAULT_MAX_WORDS, DEFAULT_MAX_WORD_CHARS))]
    ] = Field(min_length=1, max_length=DEFAULT_MAX_ITEMS,
              description="what the observations are for, each self-contained and succinct")

    @field_validator("objects_and_phenomena", "science_use_cases")
    @classmethod
    def _no_telescope_and_no_repeats(cls, items: list[str]) -> list[str]:
        for item in items:
            found = FORBIDDEN_MENTIONS.search(item)
            if found:
                raise ValueError(f"item {item!r} mentions {found.group(0)!r}: summaries never name the telescope")
        # Repeats are common from small models; drop them rather than reject (the first copy is kept).
        seen: set[str] = set()
        unique = []
        for item in items:
            if item.lower() not in seen:
                seen.add(item.lower())
                unique.append(item)
        return unique


class SummaryLimits(BaseModel):
    """The grammar's bounds. Part of the cache key: other limits are another schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_items: int = Field(default=DEFAULT_MAX_ITEMS, ge=1, le=10, description="items per list")
    max_words: int = Field(default=DEFAULT_MAX_WORDS, ge=1, le=12, description="words per item")
    max_word_chars: int = Field(default=DEFAULT_MAX_WORD_CHARS, ge=4, le=40, description="characters per word")

    def max_output_chars(self) -> int:
        """Longest JSON text the grammar allows (outlines_core whitespace '[ ]?'): a token budget bound."""
        item = self.max_words * self.max_word_chars + (self.max_words - 1) + 2
        per_list = 2 + self.max_items * item + (self.max_items - 1) * 2 + 2
        keys = len('"objects_and_phenomena"') + len('"science_use_cases"')
        return 2 + keys + 2 * per_list + 12


@lru_cache(maxsize=32)
def summary_model(limits: SummaryLimits = SummaryLimits()) -> type[Summary]:  # noqa: B008 - frozen, hashable
    """The `Summary` subclass whose grammar has these limits (the default limits give `Summary`)."""
    if limits == SummaryLimits():
        return Summary
    item = Annotated[str, StringConstraints(pattern=item_pattern(limits.max_words, limits.max_word_chars))]
    field = Field(min_length=1, max_length=limits.max_items)
    name = f"Summary_{limits.max_items}x{limits.max_words}x{limits.max_word_chars}"
    return create_model(name, __base__=Summary,
                        objects_and_phenomena=(list[item], field), science_use_cases=(list[item], field))


def summary_json_schema(limits: SummaryLimits = SummaryLimits()) -> dict[str, Any]:  # noqa: B008
    """The JSON schema every generator compiles, named 'Summary' whatever the limits."""
    schema = summary_model(limits).model_json_schema()
    schema["title"] = "Summary"
    return schema


def summary_schema_digest(limits: SummaryLimits = SummaryLimits()) -> str:  # noqa: B008
    blob = json.dumps({"version": SUMMARY_SCHEMA_VERSION, "schema": summary_json_schema(limits)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class SamplingConfig(BaseModel):
    """Decoding settings: part of every summary's provenance and of the cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 = greedy (reproducible)")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=384, ge=16, le=8192, description="output token limit")
    seed: int = Field(default=0, ge=0, description="base seed; retry k uses seed + k")
    retry_temperature: float = Field(
        default=0.7, gt=0.0, le=2.0, description="temperature of retries after a failed greedy attempt (a new seed alone changes nothing greedily)")

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), sort_keys=True)

    def for_attempt(self, attempt: int) -> SamplingConfig:
        """Settings of retry `attempt` (0 = the first try): a new seed, and sampling if greedy."""
        if attempt == 0:
            return self
        temperature = self.temperature if self.temperature > 0 else self.retry_temperature
        return self.model_copy(update={"seed": self.seed + attempt, "temperature": temperature})


class SummaryRecord(BaseModel):
    """One row of the `summaries` table: the summary, its caption, and how it was made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal_id: str
    abstract_sha256: str = Field(min_length=64, max_length=64)
    objects_and_phenomena: list[str]
    science_use_cases: list[str]
    caption: str = Field(min_length=1, description="'<objects>; <use cases>', fitted to CLIP's 77 tokens")
    caption_tokens: int = Field(
        ge=2, description="open_clip tokens incl. start/end; over 77 only when truncated (CLIP cuts the rest)")
    truncated: bool = Field(description="items were dropped from the caption to fit 77 tokens, or it still does not fit")
    backend: str
    model_id: str
    prompt_version: str
    schema_version: int
    sampling: str = Field(description="SamplingConfig as JSON; 'none' for a backend that samples nothing (extractive)")
    seed: int = Field(description="seed of the attempt that produced this summary")
    attempts: int = Field(ge=1)
    output_tokens: int = Field(ge=0)
    cache_key: str = Field(min_length=64, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("proposal_id", mode="before")
    @classmethod
    def _proposal(cls, v: object) -> str:
        return normalize_proposal_id(v)

    @model_validator(mode="after")
    def _over_77_only_when_truncated(self) -> SummaryRecord:
        if self.caption_tokens > CLIP_CONTEXT_TOKENS and not self.truncated:
            raise ValueError(f"a caption of {self.caption_tokens} tokens does not fit CLIP's {CLIP_CONTEXT_TOKENS} "
                             "but is not marked truncated")
        return self


BackendName = Literal["extractive", "transformers", "vllm", "openai"]


class SummarizeParams(BaseModel):
    """Summarize proposal abstracts into object and use-case lists (the flow's form)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root: a local path or fsspec URL")
    backend: BackendName = Field(default="extractive", description="extractive (no LLM), transformers, vllm, openai")
    model: str = Field(
        default="", description="model id or path; named: gemma3-270m, tiny-random, random-1b; '' = the backend's default")
    prompt_version: str = Field(default="v1", pattern=r"^v\d+$", description="tasks/summarize/prompts/summary_<v>.txt")
    max_items: int = Field(default=DEFAULT_MAX_ITEMS, ge=1, le=10)
    max_words: int = Field(default=DEFAULT_MAX_WORDS, ge=1, le=12, description="word limit of each item")
    max_word_chars: int = Field(default=DEFAULT_MAX_WORD_CHARS, ge=4, le=40)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=384, ge=16, le=8192)
    seed: int = Field(default=0, ge=0)
    max_attempts: int = Field(default=3, ge=1, le=10, description="tries per abstract before quarantine")
    retry_failed: bool = Field(
        default=False, description="try the quarantined abstracts again (a rerun otherwise finds the stage current)")
    batch_size: int = Field(default=16, ge=1, le=4096, description="prompts per generate call (transformers)")
    device: str = Field(default="auto", description="transformers: auto, cpu, cuda, cuda:1")
    base_url: str = Field(default_factory=default_vllm_url,
                          description="openai: the vLLM server's /v1 URL (default $HUBBLECLIP_VLLM_URL)")
    concurrency: int = Field(default=32, ge=1, le=1024, description="openai: requests in flight")
    request_timeout_s: float = Field(default=120.0, gt=0)
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="vllm: GPUs per model")
    max_model_len: int = Field(default=4096, ge=256, description="vllm: context length")
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0, description="vllm: GPU memory fraction")
    limit: int = Field(default=0, ge=0, description="summarize at most this many proposals (0 = all)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"device must be auto, cpu, mps, cuda or cuda:N, got {v!r}")
        return v

    @model_validator(mode="after")
    def _model_needs_an_llm(self) -> SummarizeParams:
        # The extractive backend runs no model: a --model given with it is a forgotten --backend.
        if self.backend == "extractive" and self.model:
            raise ValueError(f"model {self.model!r} needs an LLM backend (transformers, vllm, openai); "
                             "the extractive backend runs no model")
        return self

    @property
    def limits(self) -> SummaryLimits:
        return SummaryLimits(max_items=self.max_items, max_words=self.max_words, max_word_chars=self.max_word_chars)

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)
