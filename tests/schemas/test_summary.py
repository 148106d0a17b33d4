"""The Summary schema: bounds the grammar enforces, rules the validators enforce, provenance."""

from __future__ import annotations

import json
import re

import pytest
from outlines_core.json_schema import build_regex_from_schema
from pydantic import ValidationError

from schemas.arrow import arrow_schema_for
from schemas.summary import (
    SamplingConfig,
    SummarizeParams,
    Summary,
    SummaryLimits,
    SummaryRecord,
    item_pattern,
    summary_json_schema,
    summary_model,
    summary_schema_digest,
)


def test_json_schema_bounds_every_list_and_item_and_forbids_extra_keys():
    schema = summary_json_schema()
    assert schema["title"] == "Summary"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"objects_and_phenomena", "science_use_cases"}
    for name in ("objects_and_phenomena", "science_use_cases"):
        field = schema["properties"][name]
        assert (field["minItems"], field["maxItems"]) == (1, 5)
        # A pattern alone: beside a maxLength, outlines_core would drop the pattern.
        assert "pattern" in field["items"] and "maxLength" not in field["items"]


def test_outlines_core_grammar_is_finite():
    regex = build_regex_from_schema(json.dumps(summary_json_schema()))
    without_classes = re.sub(r"\[(?:\\.|[^\]\\])*\]", "C", regex)  # '+' inside [...] is a character
    assert not re.search(r"(?<!\\)[*+]", without_classes), "an unbounded repeat makes cut-offs possible"
    assert "{0,4}" in regex  # at most 5 items: the first, then 0-4 more


@pytest.mark.parametrize("item", ["globular clusters", "measure proper motions", "Type Ia supernovae",
                                  "pre-main sequence stars", "z=6 galaxies"])
def test_short_astronomy_items_are_valid(item):
    assert Summary(objects_and_phenomena=[item], science_use_cases=[item]).objects_and_phenomena == [item]


@pytest.mark.parametrize("item", ["", " leading space", "one two three four five", "double  space",
                                  "comma, inside", "semi; colon", 'quote "x"', "x" * 25, "tab\tinside"])
def test_items_outside_the_grammar_are_refused(item):
    with pytest.raises(ValidationError):
        Summary(objects_and_phenomena=[item], science_use_cases=["photometry"])


@pytest.mark.parametrize("item", ["HST imaging", "Hubble constant", "hubble deep field", "Space Telescope data"])
def test_telescope_mentions_are_refused(item):
    with pytest.raises(ValidationError, match="never name the telescope"):
        Summary(objects_and_phenomena=["dark matter"], science_use_cases=[item])


def test_list_sizes_and_extra_keys_are_refused():
    with pytest.raises(ValidationError):
        Summary(objects_and_phenomena=[], science_use_cases=["photometry"])
    with pytest.raises(ValidationError):
        Summary(objects_and_phenomena=[f"item{i}" for i in range(6)], science_use_cases=["photometry"])
    with pytest.raises(ValidationError):
        Summary.model_validate({"objects_and_phenomena": ["a"], "science_use_cases": ["b"], "notes": "x"})


def test_repeated_items_are_dropped_not_refused():
    summary = Summary(objects_and_phenomena=["dust", "Dust", "quasars"], science_use_cases=["photometry"])
    assert summary.objects_and_phenomena == ["dust", "quasars"]


def test_limits_make_a_subclass_with_their_own_grammar():
    limits = SummaryLimits(max_items=2, max_words=2, max_word_chars=8)
    model = summary_model(limits)
    assert issubclass(model, Summary) and model is summary_model(limits)
    assert summary_model(SummaryLimits()) is Summary
    model(objects_and_phenomena=["dark matter"], science_use_cases=["mass maps"])
    with pytest.raises(ValidationError):
        model(objects_and_phenomena=["three word item"], science_use_cases=["x"])
    with pytest.raises(ValidationError):
        model(objects_and_phenomena=["a", "b", "c"], science_use_cases=["x"])
    with pytest.raises(ValidationError, match="never name"):
        model(objects_and_phenomena=["HST"], science_use_cases=["x"])
    assert summary_schema_digest(limits) != summary_schema_digest()
    assert summary_json_schema(limits)["title"] == "Summary"


def test_max_output_chars_bounds_the_longest_valid_output():
    limits = SummaryLimits(max_items=3, max_words=2, max_word_chars=6)
    word = "w" * limits.max_word_chars
    item = " ".join([word] * limits.max_words)
    longest = {"objects_and_phenomena": [item] * 3, "science_use_cases": [item] * 3}
    text = json.dumps(longest, indent=None, separators=(" , ", " : "))  # one space around everything
    summary_model(limits).model_validate_json(text)
    assert len(text) <= limits.max_output_chars()
    assert re.fullmatch(item_pattern(2, 6), item)


def test_sampling_retries_use_a_new_seed_and_sample_when_greedy():
    base = SamplingConfig(seed=7)
    assert base.for_attempt(0) is base
    retry = base.for_attempt(2)
    assert (retry.seed, retry.temperature) == (9, base.retry_temperature)
    warm = SamplingConfig(temperature=0.3, seed=1).for_attempt(1)
    assert (warm.seed, warm.temperature) == (2, 0.3)
    assert json.loads(base.to_json())["max_new_tokens"] == base.max_new_tokens


def test_params_have_a_data_root_and_validate_values():
    params = SummarizeParams()
    assert params.data == "./data" and params.backend == "extractive"
    assert params.limits == SummaryLimits() and params.sampling == SamplingConfig()
    for bad in ({"backend": "gpt"}, {"max_words": 0}, {"prompt_version": "latest"}, {"temperature": -1}):
        with pytest.raises(ValidationError):
            SummarizeParams(**bad)
    # A secret is never a flow parameter (Prefect stores and shows those): the API key comes from
    # the environment or a Secret block (tasks/secrets.py).
    assert "api_key" not in SummarizeParams.model_fields
    with pytest.raises(ValidationError):
        SummarizeParams(api_key="secret")


def test_a_model_without_an_llm_backend_and_an_unknown_device_are_refused():
    with pytest.raises(ValidationError, match="model 'gemma3-270m' needs an LLM backend"):
        SummarizeParams(model="gemma3-270m")  # extractive: the forgotten --backend
    assert SummarizeParams(backend="transformers", model="gemma3-270m").model == "gemma3-270m"
    for device in ("auto", "cpu", "cuda", "cuda:1", "mps"):
        assert SummarizeParams(device=device).device == device
    for device in ("tpu", "cuda:", "gpu0"):
        with pytest.raises(ValidationError, match=f"device must be auto, cpu, mps, cuda or cuda:N, got '{device}'"):
            SummarizeParams(device=device)


def test_summary_record_arrow_schema_has_the_contract_columns():
    schema = arrow_schema_for(SummaryRecord)
    for name in ("proposal_id", "abstract_sha256", "objects_and_phenomena", "science_use_cases", "caption",
                 "caption_tokens", "truncated", "backend", "model_id", "prompt_version", "schema_version",
                 "sampling", "seed", "created_at"):
        assert name in schema.names
    assert str(schema.field("objects_and_phenomena").type) == "list<item: string>"
    with pytest.raises(ValidationError):
        SummaryRecord(proposal_id="12", abstract_sha256="0" * 64, objects_and_phenomena=["a"],
                      science_use_cases=["b"], caption="a; b", caption_tokens=78, truncated=False,
                      backend="extractive", model_id="m", prompt_version="none", schema_version=1,
                      sampling="{}", seed=0, attempts=1, output_tokens=1, cache_key="0" * 64)
