"""The shared drive loop: parse, validate, retry with new seeds, refuse unconstrained text."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from schemas.errors import RemoteError
from schemas.summary import SamplingConfig, SummaryLimits
from tasks.summarize.backends.base import RawOutput, SummarizerBackend
from tasks.summarize.generate import (
    GRAMMAR_ERROR_TYPES,
    GenerationStats,
    UnconstrainedOutputError,
    parse_output,
    summarize_abstracts,
)

VALID = json.dumps({"objects_and_phenomena": ["dark matter"], "science_use_cases": ["mass mapping"]})
HUBBLE = json.dumps({"objects_and_phenomena": ["dark matter"], "science_use_cases": ["HST imaging"]})
# What a server that ignored the schema writes when the model still answers JSON-ish.
OFF_GRAMMAR = json.dumps({"objects_and_phenomena": ["dark matter halos, dwarf galaxies"],
                          "science_use_cases": ["mass mapping"], "notes": "sure!"})
PROSE_AFTER = VALID + "\nHope this helps!"


class ScriptedBackend:
    """A backend whose answers are scripted per (abstract, attempt seed): exercises the loop itself."""

    name = "scripted"
    model_id = "script"
    deterministic = False

    def __init__(self, script: dict[tuple[str, int], str | Exception]):
        self.script = script
        self.calls: list[tuple[list[str], SamplingConfig]] = []

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        self.calls.append((list(abstracts), sampling))
        answer = self.script.get(("*", sampling.seed))
        if isinstance(answer, Exception):
            raise answer
        return [RawOutput(self.script.get((a, sampling.seed), VALID), output_tokens=3) for a in abstracts]

    def close(self) -> None:
        pass


def test_scripted_backend_satisfies_the_protocol():
    assert isinstance(ScriptedBackend({}), SummarizerBackend)


@pytest.mark.parametrize(("text", "reason"), [
    (VALID, "ok"),
    ('{"objects_and_phenomena": ["dark ma', "cut_off"),
    ("Sure! The abstract is about dark matter.", "invalid_json"),
    ("", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    (PROSE_AFTER, "invalid_json"),  # whole JSON, then a model talking: not a cut-off
    (HUBBLE, "schema_violation"),  # a validator's rule, which no grammar says
    (json.dumps({"objects_and_phenomena": ["a"], "science_use_cases": ["b"], "extra": 1}), "grammar_violation"),
    (OFF_GRAMMAR, "grammar_violation"),
    (json.dumps({"objects_and_phenomena": ["a"] * 6, "science_use_cases": ["b"]}), "grammar_violation"),
    (json.dumps({"objects_and_phenomena": [], "science_use_cases": ["b"]}), "grammar_violation"),
    (json.dumps({"objects_and_phenomena": ["a"]}), "grammar_violation"),
    (json.dumps({"objects_and_phenomena": "a", "science_use_cases": [1]}), "grammar_violation"),
])
def test_parse_output_classifies(text, reason):
    parsed = parse_output(RawOutput(text))
    assert parsed.reason == reason and (parsed.summary is not None) == (reason == "ok")


def test_failures_are_retried_with_new_seeds_then_reported():
    script = {("a", 0): HUBBLE, ("b", 0): '{"objects', ("b", 1): '{"objects', ("b", 2): '{"objects'}
    backend = ScriptedBackend(script)
    stats = GenerationStats()
    outcomes = summarize_abstracts(backend, ["a", "b", "c"], sampling=SamplingConfig(seed=0), max_attempts=3,
                                   stats=stats)
    assert [o.reason for o in outcomes] == ["ok", "cut_off", "ok"]
    assert (outcomes[0].attempts, outcomes[0].seed) == (2, 1)
    assert outcomes[1].attempts == 3 and outcomes[1].summary is None
    # Only failures go back, each time with the next seed and sampling instead of greedy decoding.
    assert [(c[0], c[1].seed, c[1].temperature) for c in backend.calls] == [
        (["a", "b", "c"], 0, 0.0), (["a", "b"], 1, 0.7), (["b"], 2, 0.7)]
    assert stats.outputs == 6 and stats.failures == {"schema_violation": 1, "cut_off": 3}
    assert stats.as_dict()["cut_off_rate"] == 0.5 and stats.as_dict()["invalid_json_rate"] == 0.0


def test_unconstrained_text_stops_the_run():
    backend = ScriptedBackend({("b", 0): "Here is a summary: dark matter and lensing."})
    with pytest.raises(UnconstrainedOutputError, match="not JSON"):
        summarize_abstracts(backend, ["a", "b"], sampling=SamplingConfig())


def test_json_followed_by_prose_stops_the_run_instead_of_counting_as_a_cut_off():
    parsed = parse_output(RawOutput(PROSE_AFTER))
    assert parsed.reason == "invalid_json" and "Hope this helps" in parsed.detail
    backend = ScriptedBackend({("b", 0): PROSE_AFTER})
    with pytest.raises(UnconstrainedOutputError, match="not JSON"):
        summarize_abstracts(backend, ["a", "b"], sampling=SamplingConfig())
    assert len(backend.calls) == 1  # never retried


def test_grammar_error_types_are_what_the_json_schema_encodes():
    """A keyword added to (or dropped from) the schema must be added to (or dropped from) the set."""
    from schemas.summary import summary_json_schema

    schema = summary_json_schema()
    keywords = {"required"} if schema["required"] else set()
    keywords |= {"additionalProperties"} if schema["additionalProperties"] is False else set()
    for prop in schema["properties"].values():
        keywords |= {k for k in prop if k in {"minItems", "maxItems", "type"}}
        keywords |= {k for k in prop["items"] if k in {"pattern", "maxLength", "minLength"}}
    by_keyword = {"required": {"missing"}, "additionalProperties": {"extra_forbidden"}, "minItems": {"too_short"},
                  "maxItems": {"too_long"}, "type": {"list_type", "string_type"},
                  "pattern": {"string_pattern_mismatch"}, "maxLength": {"string_too_long"},
                  "minLength": {"string_too_short"}}
    assert set().union(*(by_keyword[k] for k in keywords)) == GRAMMAR_ERROR_TYPES


def test_one_output_off_the_grammar_is_retried_then_quarantined_under_its_own_reason():
    # Alone in its retry calls, it must still not stop the run: it may be a grammar/validator mismatch.
    backend = ScriptedBackend({("a", s): OFF_GRAMMAR for s in range(3)})
    stats = GenerationStats()
    outcomes = summarize_abstracts(backend, ["a", "b"], sampling=SamplingConfig(), max_attempts=3, stats=stats)
    assert [(o.reason, o.attempts) for o in outcomes] == [("grammar_violation", 3), ("ok", 1)]
    assert "pattern" in outcomes[0].detail
    assert [c[0] for c in backend.calls] == [["a", "b"], ["a"], ["a"]]
    assert stats.failures == {"grammar_violation": 3} and stats.as_dict()["grammar_violation_rate"] == 0.75


def test_a_call_whose_every_output_breaks_the_grammar_stops_the_run():
    backend = ScriptedBackend({("a", 0): OFF_GRAMMAR, ("b", 0): OFF_GRAMMAR.replace("halos", "cores")})
    with pytest.raises(UnconstrainedOutputError, match="all 2 outputs of one call break the JSON schema's grammar"):
        summarize_abstracts(backend, ["a", "b"], sampling=SamplingConfig())
    assert len(backend.calls) == 1


def test_a_first_call_with_one_output_off_the_grammar_does_not_stop_the_run():
    # `--retry-failed` re-sends one abstract, or the last batch (holding one) finishes first: one
    # output says nothing about whether the backend applied the schema, so it is quarantined.
    backend = ScriptedBackend({("a", s): OFF_GRAMMAR for s in range(3)})
    outcomes = summarize_abstracts(backend, ["a"], sampling=SamplingConfig(), max_attempts=3)
    assert [(o.reason, o.attempts) for o in outcomes] == [("grammar_violation", 3)]
    assert [c[0] for c in backend.calls] == [["a"], ["a"], ["a"]]


class _BIsDown(ScriptedBackend):
    """Scripted outputs, except that every request for abstract 'b' fails on the server."""

    def generate(self, abstracts, sampling):
        outputs = super().generate(abstracts, sampling)
        return [RawOutput("", failure="request_failed", detail="503") if a == "b" else o
                for a, o in zip(abstracts, outputs, strict=True)]


def test_one_text_off_the_grammar_beside_a_backend_failure_does_not_stop_the_run():
    outcomes = summarize_abstracts(_BIsDown({("a", s): OFF_GRAMMAR for s in range(3)}), ["a", "b"],
                                   sampling=SamplingConfig())
    assert [o.reason for o in outcomes] == ["grammar_violation", "request_failed"]


def test_backend_failures_do_not_count_as_outputs_that_break_the_grammar():
    outcomes = summarize_abstracts(_BIsDown({("a", s): OFF_GRAMMAR for s in range(3)}), ["a", "b", "c"],
                                   sampling=SamplingConfig())
    assert [o.reason for o in outcomes] == ["grammar_violation", "request_failed", "ok"]


def test_infrastructure_errors_are_retried_a_bounded_number_of_times(monkeypatch):
    monkeypatch.setattr("tasks.summarize.generate.RETRY_PAUSE_S", 0.0)
    flaky = ScriptedBackend({("*", 0): RemoteError("503")})
    flaky.generate_calls = 0
    original = flaky.generate

    def once_broken(abstracts, sampling):
        flaky.generate_calls += 1
        if flaky.generate_calls == 1:
            raise RemoteError("503 from the server")
        return original(abstracts, sampling.model_copy(update={"seed": 1}))

    flaky.generate = once_broken
    assert summarize_abstracts(flaky, ["a"], sampling=SamplingConfig())[0].reason == "ok"
    down = ScriptedBackend({("*", 0): RemoteError("connection refused")})
    with pytest.raises(RemoteError):
        summarize_abstracts(down, ["a"], sampling=SamplingConfig(), max_attempts=2)
    assert len(down.calls) == 2


def test_limits_apply_to_parsing():
    # Three words break a two-word grammar (the other abstract's two words fit, so the run goes on).
    long_items = json.dumps({"objects_and_phenomena": ["one two three"], "science_use_cases": ["x"]})
    outcome, fits = summarize_abstracts(ScriptedBackend({("a", s): long_items for s in range(3)}), ["a", "b"],
                                        sampling=SamplingConfig(), limits=SummaryLimits(max_words=2))
    assert outcome.reason == "grammar_violation" and "pattern" in outcome.detail
    assert fits.reason == "ok"


def test_progress_counts_every_abstract_once():
    seen: list[int] = []
    summarize_abstracts(ScriptedBackend({("b", 0): HUBBLE}), ["a", "b", "c"], sampling=SamplingConfig(),
                        progress=seen.append)
    assert sum(seen) == 3
