"""Versioned prompt templates: tasks/summarize/prompts/summary_<version>.txt.

A template is data, not code, so a prompt change is a new file (v2) and old summaries keep the
version that made them. The template's sha256 joins the cache key too, so an edited file without
a version bump still invalidates cached summaries rather than silently reusing them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template

from schemas.errors import InputError
from schemas.summary import SummaryLimits

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
_VERSION = re.compile(r"^v\d+$")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def key(self) -> str:
        """What provenance records: the version plus a short content hash, e.g. 'v1+3f2a9c1b04de'."""
        return f"{self.version}+{self.sha256[:12]}"

    def render(self, abstract: str, limits: SummaryLimits) -> str:
        return Template(self.text).substitute(
            abstract=clean_abstract(abstract), max_items=limits.max_items, max_words=limits.max_words)


def clean_abstract(abstract: str) -> str:
    """Collapse whitespace (documents wrap lines at random) so one abstract always renders one way."""
    return _WHITESPACE.sub(" ", abstract).strip()


def list_prompt_versions() -> list[str]:
    return sorted(p.stem.removeprefix("summary_") for p in PROMPTS_DIR.glob("summary_v*.txt"))


@lru_cache(maxsize=8)
def load_prompt(version: str = "v1") -> PromptTemplate:
    if not _VERSION.match(version):
        raise InputError(f"prompt version must look like 'v1', got {version!r}")
    path = PROMPTS_DIR / f"summary_{version}.txt"
    if not path.is_file():
        raise InputError(f"no prompt template {path.name} (available: {', '.join(list_prompt_versions())})")
    text = path.read_text(encoding="utf-8")
    if "$abstract" not in text:
        raise InputError(f"prompt template {path.name} has no $abstract placeholder")
    return PromptTemplate(version=version, text=text)
