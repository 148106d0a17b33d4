"""Captions for training: the summary caption, or a random window of whole abstract sentences.

The paper trained on abstracts by taking a random run of whole sentences of at most 77 words,
after a fixed 'Category: X.' prefix. Tokenisation is open_clip's: the tokenizer is passed in
(`open_clip.get_tokenizer(model_name)`), and its context length is whatever it carries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from schemas.dataset import CaptionSource

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_CATEGORY_PREFIX = re.compile(r"^(Category:[^.]*\.)\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: a split after . ! or ? followed by space and a capital or digit."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def sentence_window(text: str, rng: np.random.Generator, max_words: int = 77) -> str:
    """A random run of whole sentences with at most `max_words` words in all, prefix included.

    A leading 'Category: X.' prefix is always kept; a first sentence longer than the budget
    is cut at the budget (the only way to keep some text from it).
    """
    prefix = ""
    match = _CATEGORY_PREFIX.match(text)
    if match:
        prefix, text = match.group(1), text[match.end():]
    budget = max(1, max_words - len(prefix.split()))
    sentences = split_sentences(text)
    if not sentences:
        return prefix
    start = int(rng.integers(len(sentences)))
    chosen: list[str] = []
    used = 0
    for sentence in sentences[start:]:
        n = len(sentence.split())
        if used + n > budget:
            if not chosen:
                chosen.append(" ".join(sentence.split()[:budget]))
            break
        chosen.append(sentence)
        used += n
    body = " ".join(chosen)
    return f"{prefix} {body}".strip()


def choose_caption(summary: str, abstract: str, source: CaptionSource, rng: np.random.Generator,
                   max_words: int = 77) -> str:
    if source == "summary":
        return summary
    return sentence_window(abstract, rng, max_words)


def context_length(tokenizer: Any, default: int = 77) -> int:
    return int(getattr(tokenizer, "context_length", default) or default)


def tokenize(texts: Sequence[str], tokenizer: Any) -> torch.Tensor:
    """LongTensor [len(texts), context_length] from an open_clip tokenizer (longer texts truncated)."""
    tokens = tokenizer(list(texts))
    return tokens if tokens.dtype == torch.long else tokens.long()
