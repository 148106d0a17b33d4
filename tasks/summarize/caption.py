"""The training caption of a summary: "<objects>; <use cases>", fitted to CLIP's 77 tokens.

Counted with open_clip's own tokenizer (`get_tokenizer("ViT-B-16")`, offline), start and end
tokens included, because that is what the model will see: anything past 77 would be cut
silently at training time. When a caption is too long, whole items are dropped from the end of
the longer list (the prompt puts the most relevant first), keeping at least one item per list,
and the row is marked `truncated`; the stage reports the rate (goal 0%). The token count kept is
always the caption's real one, so a caption CLIP will still cut shows as over 77.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from schemas.summary import CLIP_CONTEXT_TOKENS

CLIP_TOKENIZER_MODEL = "ViT-B-16"
_SPECIAL_TOKENS = 2  # <start_of_text> and <end_of_text>


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: int  # open_clip tokens of `text`, start and end included: over max_tokens when CLIP will cut it
    truncated: bool  # items were dropped, or (one item per list left) the text is still too long


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    import open_clip  # imported lazily: ~5 s, and only the caption needs it

    return open_clip.get_tokenizer(CLIP_TOKENIZER_MODEL)


def count_clip_tokens(text: str) -> int:
    """Tokens CLIP's text tower sees for `text`, before its 77-token cut."""
    return len(_tokenizer().encode(text)) + _SPECIAL_TOKENS


def join_caption(objects: list[str], use_cases: list[str]) -> str:
    return f"{', '.join(objects)}; {', '.join(use_cases)}"


def build_caption(objects: list[str], use_cases: list[str], max_tokens: int = CLIP_CONTEXT_TOKENS) -> Caption:
    """The caption for these lists, dropping trailing items until it fits `max_tokens`."""
    if not objects or not use_cases:
        raise ValueError("a caption needs at least one object and one use case")
    objects, use_cases = list(objects), list(use_cases)
    dropped = False
    while True:
        text = join_caption(objects, use_cases)
        tokens = count_clip_tokens(text)
        if tokens <= max_tokens:
            return Caption(text, tokens, dropped)
        if len(objects) == 1 and len(use_cases) == 1:
            # It can happen with the default limits: one item per list of 4 rare 24-character words
            # is ~195 tokens. CLIP cuts the text at training time; the count stays the real one, so
            # the run's maximum shows by how much.
            return Caption(text, tokens, True)
        longer = objects if len(objects) >= len(use_cases) and len(objects) > 1 else use_cases
        if len(longer) == 1:
            longer = objects if longer is use_cases else use_cases
        longer.pop()
        dropped = True
