"""The LLM-free summarizer: vocabulary, acronyms, and what it says about real abstracts."""

from __future__ import annotations

import re

import pytest

from schemas.summary import FORBIDDEN_MENTIONS, SamplingConfig, Summary, SummaryLimits, item_pattern
from schemas.vocabulary import CURATED_CLASSES
from tasks.summarize import vocabulary
from tasks.summarize.backends.extractive import ExtractiveBackend, extract_summary, find_terms
from tasks.summarize.generate import parse_output


def _singular(name: str) -> str:
    for plural, single in (("galaxies", "galaxy"), ("nebulae", "nebula"), ("nuclei", "nucleus"),
                           ("supernovae", "supernova"), ("histories", "history"), ("nurseries", "nursery"),
                           ("binaries", "binary")):
        if name.endswith(plural):
            return name[: -len(plural)] + single
    return name[:-1] if name.endswith("s") else name


@pytest.mark.parametrize("name", CURATED_CLASSES)
def test_every_curated_class_is_found_by_its_name_singular_or_plural(name):
    for form in {name, _singular(name), name.replace("-", " ")}:
        matches = find_terms(f"We will observe {form} in detail.", vocabulary.object_terms())
        assert [m.term.name for m in matches] == [name], form


def test_longest_match_wins_and_words_are_whole():
    matches = find_terms("primordial black holes and black holes; industry", vocabulary.object_terms())
    assert [m.term.name for m in matches] == ["primordial black holes", "black holes"]  # no 'dust' in 'industry'


def test_acronyms_are_spelled_out_from_the_abstract_and_the_common_list():
    text = "We image ultra-faint dwarf (UFD) galaxies. UFDs host old stars. AGN feedback and SNe matter."
    assert vocabulary.defined_acronyms(text) == {"UFD": "ultra-faint dwarf"}
    expanded = vocabulary.expand_acronyms(text)
    assert "(UFD)" not in expanded and "ultra-faint dwarf galaxies. ultra-faint dwarfs host" in expanded
    assert "active galactic nuclei feedback" in expanded and "supernovae matter" in expanded
    assert vocabulary.defined_acronyms("the star formation history (SFH) and initial mass function (IMF)") == {
        "SFH": "star formation history", "IMF": "initial mass function"}


def test_purpose_sentences_become_use_cases():
    summary = extract_summary("We propose to measure internal proper motions in globular clusters. "
                              "These data will allow us to search for intermediate-mass black holes.")
    assert summary is not None
    assert summary.objects_and_phenomena[:2] == ["stellar proper motions", "globular clusters"]
    assert "measure stellar proper motions" in summary.science_use_cases
    assert "search for black holes" in summary.science_use_cases


def test_no_known_object_gives_no_summary_and_the_backend_says_why():
    assert extract_summary("The schedule is flexible and the budget is small.") is None
    (raw,) = ExtractiveBackend().generate(["The schedule is flexible."], SamplingConfig())
    assert parse_output(raw).reason == "no_vocabulary_match"


def test_limits_are_respected():
    limits = SummaryLimits(max_items=2, max_words=2, max_word_chars=12)
    text = ("We study low surface brightness galaxies, globular clusters, dark matter and quasars, "
            "to measure their distances with photometry, spectroscopy and astrometry.")
    summary = extract_summary(text, limits)
    pattern = re.compile(item_pattern(2, 12))
    items = summary.objects_and_phenomena + summary.science_use_cases
    assert len(summary.objects_and_phenomena) <= 2 and len(summary.science_use_cases) <= 2
    assert all(pattern.match(item) for item in items)
    assert "low surface brightness galaxies" not in items  # 4 words: does not fit


def test_backend_output_is_schema_valid_json_and_deterministic(figure3_abstracts):
    backend = ExtractiveBackend()
    first = backend.generate(figure3_abstracts, SamplingConfig())
    again = backend.generate(figure3_abstracts, SamplingConfig(seed=5, temperature=1.0))
    assert [r.text for r in first] == [r.text for r in again]
    for raw in first:
        summary = Summary.model_validate_json(raw.text)
        assert not any(FORBIDDEN_MENTIONS.search(i) for i in summary.objects_and_phenomena + summary.science_use_cases)
    assert backend.model_id.startswith("vocabulary-") and backend.deterministic


def test_real_abstracts_get_sensible_summaries(figure3_abstracts, apt_abstract):
    """The five real abstracts of Figure 3 and the real APT file: what a reader would name."""
    summaries = [extract_summary(a) for a in [*figure3_abstracts, apt_abstract]]
    objects = [set(s.objects_and_phenomena) for s in summaries]
    uses = [" | ".join(s.science_use_cases) for s in summaries]
    # Merging clusters to study dark matter with lensing (two versions of the same abstract).
    for i in (0, 1):
        assert {"dark matter", "galaxy clusters", "gravitational lensing"} <= objects[i]
        assert "dark matter" in uses[i]
    # A bulge treasury program: resolved stars, proper motions, abundances.
    assert {"stellar populations", "stellar proper motions", "stellar abundances"} <= objects[2]
    # Ultra-faint dwarfs: star formation histories, the IMF, reionization.
    assert {"dwarf galaxies", "star formation histories", "initial mass function", "reionization epoch"} <= objects[3]
    # Wolf-Rayet stars as supernova progenitors; starbursts.
    assert {"Wolf-Rayet stars", "supernovae", "starburst galaxies"} <= objects[4]
    # Uranus aurorae (program 13012): a solar system object, never the telescope.
    assert {"solar system objects", "planetary aurorae"} <= objects[5]
    assert "spectroscopy" in uses[5]


def test_code_digest_ignores_comments_docstrings_and_layout_but_not_code():
    from tasks.summarize.backends.extractive import code_digest

    source = 'X = 1\n\n\ndef f(a):\n    return a + X\n'
    same = ('"""A module docstring."""\nX = 1  # why X is 1\n\n# a comment line\ndef f(a):\n'
            '    """Adds X."""\n    return (a + X)\n')
    assert code_digest(same) == code_digest(source)
    assert code_digest(source.replace("a + X", "a - X")) != code_digest(source)
    assert code_digest(source.replace("X = 1", "X = 2")) != code_digest(source)
    # A value hashed on its own is left out of the code, with or without an annotation.
    assert code_digest(source.replace("X = 1", "X: int = 2"), leave_out=frozenset({"X"})) == \
        code_digest(source, leave_out=frozenset({"X"}))


def test_model_id_follows_the_values_the_matching_reads(monkeypatch):
    from tasks.summarize.backends import extractive

    now = extractive.extractive_model_id()

    def model_id_with(name: str, value: object) -> str:
        with monkeypatch.context() as patched:
            patched.setattr(vocabulary, name, value)
            return extractive.extractive_model_id()

    renamed = tuple("dwarf galaxy pairs" if c == "dwarf galaxies" else c for c in vocabulary.CURATED_CLASSES)
    assert model_id_with("CURATED_CLASSES", renamed) != now
    assert model_id_with("CURATED_CLASSES", tuple(reversed(vocabulary.CURATED_CLASSES))) == now  # a set to matching
    synonyms = {**vocabulary.CLASS_SYNONYMS, "dust": (*vocabulary.CLASS_SYNONYMS["dust"], r"dust clouds?")}
    assert model_id_with("CLASS_SYNONYMS", synonyms) != now
    assert model_id_with("CLASS_SYNONYMS", dict(reversed(vocabulary.CLASS_SYNONYMS.items()))) == now
    reordered = {**vocabulary.CLASS_SYNONYMS, "dust": tuple(reversed(vocabulary.CLASS_SYNONYMS["dust"]))}
    assert model_id_with("CLASS_SYNONYMS", reordered) != now  # the first alternative that fits wins
    assert model_id_with("SCIENCE_USE_CASES", {**vocabulary.SCIENCE_USE_CASES, "astrometry": (r"positions?",)}) != now
    assert model_id_with("ACRONYMS", {**vocabulary.ACRONYMS, "HVS": "hypervelocity star"}) != now
    assert model_id_with("VERB_CUES", dict(reversed(vocabulary.VERB_CUES.items()))) != now  # verbs found by position
    assert model_id_with("GENERIC_ITEMS", vocabulary.GENERIC_ITEMS | {"field"}) != now
    with monkeypatch.context() as patched:
        patched.setattr(extractive, "CUE_WINDOW_CHARS", extractive.CUE_WINDOW_CHARS + 1)
        assert extractive.extractive_model_id() != now
    with monkeypatch.context() as patched:
        import schemas.vocabulary

        patched.setattr(schemas.vocabulary, "PAPER_QUERIES", ("globular cluster",))
        assert extractive.extractive_model_id() == now
    assert extractive.extractive_model_id() == now
