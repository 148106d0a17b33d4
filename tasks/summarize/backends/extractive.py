"""The LLM-free summarizer: vocabulary matching plus purpose cues. Deterministic; the CPU default.

Objects and phenomena: every vocabulary term found in the abstract (acronyms spelled out first,
overlapping matches resolved longest-first), ranked by how often it is mentioned, with the 77
curated classes ahead on ties, so the summary speaks the evaluation's vocabulary.
Science use cases: purpose sentences ("we propose to measure the ... of globular clusters")
become "<verb> <object>" items, then the use-case terms (photometry, proper motion measurements,
mass mapping, ...) fill the remaining places.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from schemas.summary import (
    SamplingConfig,
    SummarizeParams,
    Summary,
    SummaryLimits,
    item_pattern,
    summary_model,
)
from tasks.summarize import vocabulary
from tasks.summarize.backends.base import RawOutput
from tasks.summarize.prompt import clean_abstract

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]])[.;!?](?=\s|$)")
CUE_WINDOW_CHARS = 140
# The model id is every summary's cache key, hence the summaries' digest and the dataset version:
# it must change with what the matching does and with nothing else. So it hashes the values the
# matching reads (below) and the code of these two modules as a syntax tree without docstrings,
# comments or layout. schemas/vocabulary.py is read for CURATED_CLASSES only: its PAPER_QUERIES
# (evaluation) or a comment there must not retrain everything downstream.
MATCHER_MODULES = ("tasks.summarize.backends.extractive", "tasks.summarize.vocabulary")
# Module-level names hashed as values by `matching_values`, so left out of the code's tree: the
# order of a dict's keys is then free, the order of what matching reads in order is not.
VALUE_NAMES = frozenset({"CUE_WINDOW_CHARS", "CLASS_SYNONYMS", "EXTRA_OBJECTS", "SCIENCE_USE_CASES", "ACRONYMS",
                         "VERB_CUES", "_CUE_LEAD", "GENERIC_ITEMS"})


@dataclass(frozen=True)
class Match:
    term: vocabulary.Term
    start: int
    end: int


def matching_values() -> dict[str, object]:
    """Every value the matching reads, JSON-ready. Term tables are keyed by name, so their order is
    free (json sorts the keys); a term's alternatives and the verb cues keep theirs: a regex
    alternation takes the first alternative that fits, and a cue's verb is found by its position."""
    def table(terms: dict[str, tuple[str, ...]]) -> dict[str, list[str]]:
        return {name: list(alternatives) for name, alternatives in terms.items()}

    return {
        "curated_classes": sorted(vocabulary.CURATED_CLASSES),  # a set to the matcher: which terms rank first
        "class_synonyms": table(vocabulary.CLASS_SYNONYMS),
        "extra_objects": table(vocabulary.EXTRA_OBJECTS),
        "science_use_cases": table(vocabulary.SCIENCE_USE_CASES),
        "acronyms": dict(vocabulary.ACRONYMS),
        "verb_cues": [list(cue) for cue in vocabulary.VERB_CUES.items()],
        "cue_lead": vocabulary._CUE_LEAD,
        "generic_items": sorted(vocabulary.GENERIC_ITEMS),
        "cue_window_chars": CUE_WINDOW_CHARS,
    }


def code_digest(source: str, *, leave_out: frozenset[str] = frozenset()) -> str:
    """sha256 of a module's code, blind to comments, docstrings and layout, and to the module-level
    assignments of `leave_out` (values hashed on their own)."""
    tree = ast.parse(source)
    tree.body = [node for node in tree.body if not _assigns_only(node, leave_out)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and _has_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    # ast.unparse, not ast.dump: dump's fields change between Python versions (3.12 type_params,
    # 3.13 drops empty fields), which would make a new id, and a retrain, on an interpreter upgrade.
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest()


def _has_docstring(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0] if node.body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def _assigns_only(node: ast.stmt, names: frozenset[str]) -> bool:
    if isinstance(node, ast.AnnAssign):
        targets = [node.target]
    elif isinstance(node, ast.Assign):
        targets = node.targets
    else:
        return False
    return all(isinstance(t, ast.Name) and t.id in names for t in targets)


@lru_cache(maxsize=8)
def _module_code_digest(module: str) -> str:
    path = Path(importlib.import_module(module).__file__ or "")
    return code_digest(path.read_text(encoding="utf-8"), leave_out=VALUE_NAMES)


def extractive_model_id() -> str:
    """Changes whenever what the matching does changes (its values or its code), and only then."""
    digest = hashlib.sha256(json.dumps(matching_values(), sort_keys=True, ensure_ascii=False).encode())
    for module in MATCHER_MODULES:
        digest.update(f"\0{module}\0{_module_code_digest(module)}".encode())
    return f"vocabulary-{digest.hexdigest()[:12]}"


def find_terms(text: str, terms: Sequence[vocabulary.Term]) -> list[Match]:
    """Non-overlapping matches, longest first ('primordial black holes' beats 'black holes'), in text order."""
    found = [Match(term, m.start(), m.end()) for term in terms for m in term.pattern.finditer(text)]
    found.sort(key=lambda m: (m.start - m.end, m.start, m.term.name))
    taken: list[Match] = []
    for match in found:
        if all(match.end <= t.start or match.start >= t.end for t in taken):
            taken.append(match)
    return sorted(taken, key=lambda m: m.start)


def _ranked_names(matches: list[Match]) -> list[str]:
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    curated: dict[str, bool] = {}
    for m in matches:
        counts[m.term.name] = counts.get(m.term.name, 0) + 1
        first.setdefault(m.term.name, m.start)
        curated[m.term.name] = m.term.curated
    return sorted(counts, key=lambda n: (-(counts[n] + (0.5 if curated[n] else 0.0)), first[n]))


def _cue_items(text: str, objects: list[Match]) -> list[str]:
    """'we will measure the ages of globular clusters' -> 'measure globular clusters'."""
    items = []
    targets: set[str] = set()  # one use case per object: 'probe X' then 'compare X' says little more
    ends = [m.end() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    for cue in vocabulary.verb_cue_pattern().finditer(text):
        sentence_end = next(e for e in ends if e >= cue.end())
        stop = min(sentence_end, cue.end() + CUE_WINDOW_CHARS)
        target = next((m for m in objects if cue.end() <= m.start < stop), None)
        if target is not None and target.term.name not in targets:
            targets.add(target.term.name)
            items.append(f"{vocabulary.canonical_verb(cue)} {target.term.name}")
    return items


def _fits(item: str, pattern: re.Pattern[str]) -> bool:
    return item.lower() not in vocabulary.GENERIC_ITEMS and bool(pattern.match(item))


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
    return out


def extract_summary(abstract: str, limits: SummaryLimits = SummaryLimits()) -> Summary | None:  # noqa: B008
    """Objects and use cases named by the abstract, or None when it names no known object."""
    text = vocabulary.expand_acronyms(clean_abstract(abstract))
    pattern = re.compile(item_pattern(limits.max_words, limits.max_word_chars))
    object_matches = find_terms(text, vocabulary.object_terms())
    objects = [n for n in _ranked_names(object_matches) if _fits(n, pattern)][: limits.max_items]
    if not objects:
        return None
    cues = [c for c in _unique(_cue_items(text, object_matches)) if _fits(c, pattern)]
    terms = [n for n in _ranked_names(find_terms(text, vocabulary.use_case_terms()))
             if _fits(n, pattern) and not any(c.endswith(f" {n}") for c in cues)]
    # Purpose sentences are the most specific use cases, but leave room for the named methods.
    first_cues = cues[: math.ceil(limits.max_items / 2)]
    use_cases = _unique(first_cues + terms + cues[len(first_cues):])[: limits.max_items]
    if not use_cases:
        fallback = f"study {objects[0]}"
        use_cases = [fallback if _fits(fallback, pattern) else objects[0]]
    return summary_model(limits)(objects_and_phenomena=objects, science_use_cases=use_cases)


class ExtractiveBackend:
    """Summaries from the curated vocabulary; no model, no randomness."""

    name = "extractive"
    deterministic = True

    def __init__(self, limits: SummaryLimits = SummaryLimits()):  # noqa: B008
        self.limits = limits
        self.model_id = extractive_model_id()

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        outputs = []
        for abstract in abstracts:
            summary = extract_summary(abstract, self.limits)
            if summary is None:
                outputs.append(RawOutput("", input_tokens=len(abstract.split()), failure="no_vocabulary_match",
                                         detail="the abstract names no object class the vocabulary knows"))
                continue
            text = summary.model_dump_json()
            outputs.append(RawOutput(text, input_tokens=len(abstract.split()), output_tokens=len(text.split())))
        return outputs

    def close(self) -> None:
        pass


def create_extractive_backend(params: SummarizeParams) -> ExtractiveBackend:
    return ExtractiveBackend(params.limits)
