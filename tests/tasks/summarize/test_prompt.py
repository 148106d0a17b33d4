"""Versioned prompt templates."""

from __future__ import annotations

import pytest

from schemas.errors import InputError
from schemas.summary import SummaryLimits
from tasks.summarize.prompt import PromptTemplate, clean_abstract, list_prompt_versions, load_prompt


def test_v1_renders_the_paper_rules_and_the_abstract():
    prompt = load_prompt("v1")
    text = prompt.render("We   observe\n dwarf galaxies.", SummaryLimits(max_items=4, max_words=3))
    assert "We observe dwarf galaxies." in text  # whitespace collapsed
    assert "at most 4 items" in text and "at most 3 words" in text
    for rule in ("expert astrophysicist", "Never mention Hubble", "Spell out acronyms", "not the instance",
                 "objects_and_phenomena", "science_use_cases"):
        assert rule in text
    assert "$" not in text


def test_key_names_version_and_content():
    prompt = load_prompt("v1")
    assert prompt.key.startswith("v1+") and len(prompt.key) == 3 + 12
    edited = PromptTemplate("v1", prompt.text + " ")
    assert edited.key != prompt.key  # an edit without a version bump still changes the cache key


def test_unknown_or_malformed_versions_fail_clearly():
    assert "v1" in list_prompt_versions()
    with pytest.raises(InputError, match="available: .*v1"):
        load_prompt("v99")
    with pytest.raises(InputError, match="look like 'v1'"):
        load_prompt("../../etc/passwd")


def test_clean_abstract():
    assert clean_abstract("  a\tb\n\nc  ") == "a b c"
