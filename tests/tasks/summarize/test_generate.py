"""The shared drive loop: parse, validate, retry with new seeds, refuse unconstrained text."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from schemas.errors import RemoteError
from schemas.summary import SamplingConfig, SummaryLimits
from tasks.summarize.backends.base import RawOutput, SummarizerBackend
from tasks.summarize.generate import (
    GenerationStats,
    UnconstrainedOutputError,
    parse_output,
    summarize_abstracts,
)

VALID = json.dumps({"objects_and_phenomena": ["dark matter"], "science_use_cases": ["mass mapping"]})
HUBBLE = json.dumps({"objects_and_phenomena": ["dark matter"], "science_use_cases": ["HST imaging"]})


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
    (HUBBLE, "schema_violation"),
    (json.dumps({"objects_and_phenomena": ["a"], "science_use_cases": ["b"], "extra": 1}), "schema_violation"),
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
    long_items = json.dumps({"objects_and_phenomena": ["one two three"], "science_use_cases": ["x"]})
    outcome = summarize_abstracts(ScriptedBackend({("a", s): long_items for s in range(3)}), ["a"],
                                  sampling=SamplingConfig(), limits=SummaryLimits(max_words=2))[0]
    assert outcome.reason == "schema_violation" and "pattern" in outcome.detail


def test_progress_counts_every_abstract_once():
    seen: list[int] = []
    summarize_abstracts(ScriptedBackend({("b", 0): HUBBLE}), ["a", "b", "c"], sampling=SamplingConfig(),
                        progress=seen.append)
    assert sum(seen) == 3
