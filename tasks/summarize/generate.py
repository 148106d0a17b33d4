"""Drive a backend over many abstracts: parse, validate, retry with new seeds, count failures.

Every backend's raw text goes through the same checks here, so a backend cannot hand back an
unchecked summary. Failure kinds (the per-run guards report their rates):

- `cut_off`: JSON that never closes. Under a bounded grammar only the token limit stops a model
  early, so this is a cut-off; retried (target < 0.5% of outputs).
- `schema_violation`: well-formed JSON the `Summary` model refuses for a rule the grammar cannot
  say (a telescope mention); retried with a new seed, then quarantined.
- `grammar_violation`: well-formed JSON that breaks what the grammar itself enforces (an item off
  the pattern, too many items, an extra key): the backend did not apply the schema. One such output
  may be a grammar/validator mismatch, so it is retried and quarantined like a schema violation;
  when every output of a call breaks the grammar, two texts at least, the schema was ignored and
  `UnconstrainedOutputError` stops the run.
- not JSON at all (`invalid_json`), JSON followed by prose included: constrained decoding was not
  in force (it happened: outlines 1.3.0 with vLLM >= 0.12 ignored the schema and still answered
  HTTP 200). That is never accepted or retried: `UnconstrainedOutputError` stops the run (target 0%
  invalid JSON).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from schemas.errors import PermanentRemoteError, RemoteError
from schemas.summary import SamplingConfig, Summary, SummaryLimits, summary_model
from tasks.summarize.backends.base import MIN_OUTPUTS_TO_BLAME_BACKEND, RawOutput, SummarizerBackend

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 1.0
# pydantic error types for what the Summary JSON schema itself encodes, so a constrained decoder
# cannot produce them: `pattern` per item, `minItems`/`maxItems`, `additionalProperties: false`,
# `required` and the array/string types. (No `maxLength`: string_too_long is the pattern's job.)
# Anything else (value_error: a telescope mention) is a validator rule the grammar cannot say.
GRAMMAR_ERROR_TYPES = frozenset({"string_pattern_mismatch", "too_short", "too_long", "extra_forbidden", "missing",
                                 "list_type", "string_type"})


class UnconstrainedOutputError(PermanentRemoteError):
    """A backend returned text that is not JSON: its structured-output constraint was ignored."""


@dataclass(frozen=True)
class ParsedOutput:
    summary: Summary | None
    reason: str = "ok"  # ok | cut_off | invalid_json | grammar_violation | schema_violation | <backend failure>
    detail: str = ""


@dataclass
class Outcome:
    """The result for one abstract after all attempts."""

    summary: Summary | None
    reason: str = "ok"
    detail: str = ""
    attempts: int = 0
    seed: int = 0
    output_tokens: int = 0


@dataclass
class GenerationStats:
    outputs: int = 0  # raw outputs received, retries included
    failures: Counter = field(default_factory=Counter)  # reason -> count over all raw outputs
    input_tokens: int = 0
    output_tokens: int = 0
    generate_seconds: float = 0.0

    def rate(self, reason: str) -> float:
        return self.failures[reason] / self.outputs if self.outputs else 0.0

    def as_dict(self) -> dict[str, float | int]:
        seconds = self.generate_seconds
        return {
            "raw_outputs": self.outputs,
            "invalid_json_rate": self.rate("invalid_json"),
            "cut_off_rate": self.rate("cut_off"),
            "schema_violation_rate": self.rate("schema_violation"),
            "grammar_violation_rate": self.rate("grammar_violation"),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "generate_seconds": round(seconds, 3),
            "tokens_per_s": round((self.input_tokens + self.output_tokens) / seconds, 1) if seconds else 0.0,
            "output_tokens_per_s": round(self.output_tokens / seconds, 1) if seconds else 0.0,
        }


def parse_output(raw: RawOutput, model: type[Summary] = Summary) -> ParsedOutput:
    """Classify one raw output; never raises."""
    if raw.failure:
        return ParsedOutput(None, raw.failure, raw.detail)
    text = raw.text.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # a whole JSON value, then more text: a model talking, unconstrained
            return ParsedOutput(None, "invalid_json", f"not JSON: text after the JSON value: {text[err.pos:][:80]!r}")
        if text.startswith("{"):
            return ParsedOutput(None, "cut_off", f"unterminated JSON after {len(text)} characters ({err.msg})")
        return ParsedOutput(None, "invalid_json", f"not JSON: {text[:80]!r}")
    if not isinstance(data, dict):
        return ParsedOutput(None, "invalid_json", f"JSON {type(data).__name__}, not an object: {text[:80]!r}")
    try:
        return ParsedOutput(model.model_validate(data))
    except ValidationError as err:
        errors = err.errors()
        broken = [e for e in errors if e["type"] in GRAMMAR_ERROR_TYPES]
        first = (broken or errors)[0]
        where = ".".join(str(p) for p in first["loc"])
        reason = "grammar_violation" if broken else "schema_violation"
        return ParsedOutput(None, reason, f"{where}: {first['msg']}"[:300])


def _generate_with_retries(backend: SummarizerBackend, abstracts: Sequence[str], sampling: SamplingConfig,
                           retries: int) -> list[RawOutput]:
    """One backend call; infrastructure errors (RemoteError) are retried a bounded number of times."""
    for attempt in range(retries + 1):
        try:
            return backend.generate(abstracts, sampling)
        except RemoteError as err:
            if attempt == retries:
                raise
            log.warning("%s backend failed (%s); retry %d of %d", backend.name, err, attempt + 1, retries)
            time.sleep(RETRY_PAUSE_S * (2 ** attempt))
    raise AssertionError("unreachable")


def summarize_abstracts(
    backend: SummarizerBackend,
    abstracts: Sequence[str],
    *,
    sampling: SamplingConfig,
    limits: SummaryLimits = SummaryLimits(),  # noqa: B008 - frozen
    max_attempts: int = 3,
    stats: GenerationStats | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """Summarize every abstract: all pending ones go to the backend together, failures again with new seeds.

    Returns one Outcome per abstract, in order. `progress(n)` is told how many abstracts were settled.
    """
    model = summary_model(limits)
    stats = stats if stats is not None else GenerationStats()
    outcomes = [Outcome(None, "not_attempted") for _ in abstracts]
    pending = list(range(len(abstracts)))
    attempts = 1 if backend.deterministic else max_attempts
    for attempt in range(attempts):
        if not pending:
            break
        settings = sampling.for_attempt(attempt)
        started = time.perf_counter()
        raws = _generate_with_retries(backend, [abstracts[i] for i in pending], settings, retries=max_attempts - 1)
        stats.generate_seconds += time.perf_counter() - started
        if len(raws) != len(pending):
            raise PermanentRemoteError(f"{backend.name} backend returned {len(raws)} outputs for {len(pending)} abstracts")
        still_pending = []
        broke_grammar = 0  # outputs with text that the grammar should have made impossible
        texts = 0
        for index, raw in zip(pending, raws, strict=True):
            stats.outputs += 1
            stats.input_tokens += raw.input_tokens
            stats.output_tokens += raw.output_tokens
            parsed = parse_output(raw, model)
            outcome = outcomes[index]
            outcome.attempts, outcome.seed, outcome.output_tokens = attempt + 1, settings.seed, raw.output_tokens
            if parsed.reason == "invalid_json" and not raw.failure:
                stats.failures["invalid_json"] += 1
                raise UnconstrainedOutputError(
                    f"{backend.name} backend ({backend.model_id}) returned text that is not JSON, so its structured-output "
                    f"constraint was not applied; refusing unconstrained output ({parsed.detail})")
            texts += not raw.failure
            broke_grammar += parsed.reason == "grammar_violation"
            if parsed.summary is not None:
                outcome.summary, outcome.reason, outcome.detail = parsed.summary, "ok", ""
                continue
            stats.failures[parsed.reason] += 1
            outcome.reason, outcome.detail = parsed.reason, parsed.detail
            still_pending.append(index)
        # Only the first call holds every abstract; a retry holds just the failures, so one odd
        # output (a grammar/validator mismatch) would otherwise look like an ignored schema. For
        # the same reason a first call with one text (one abstract left to retry, a last batch of
        # one) proves nothing about the backend.
        if attempt == 0 and texts >= MIN_OUTPUTS_TO_BLAME_BACKEND and broke_grammar == texts:
            first = next(outcomes[i] for i in pending if outcomes[i].reason == "grammar_violation")
            raise UnconstrainedOutputError(
                f"{backend.name} backend ({backend.model_id}): all {texts} outputs of one call break the JSON schema's "
                f"grammar, so its structured-output constraint was not applied; refusing them ({first.detail})")
        if progress is not None:
            progress(len(pending) - len(still_pending))
        if still_pending and attempt + 1 < attempts:
            log.info("%d of %d outputs failed validation; retrying with seed %d", len(still_pending), len(pending),
                     sampling.for_attempt(attempt + 1).seed)
        pending = still_pending
    if progress is not None and pending:
        progress(len(pending))
    return outcomes
