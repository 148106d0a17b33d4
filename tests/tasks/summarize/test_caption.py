"""Captions fitted to CLIP's 77 tokens, counted by open_clip's own tokenizer."""

from __future__ import annotations

import open_clip
import pytest

from tasks.summarize.caption import build_caption, count_clip_tokens, join_caption


def test_count_matches_what_open_clip_feeds_the_model():
    text = "globular clusters, dark matter; measure proper motions, photometry"
    ids = open_clip.get_tokenizer("ViT-B-16")([text])[0]
    assert count_clip_tokens(text) == int((ids != 0).sum())


def test_short_caption_is_kept_whole():
    caption = build_caption(["dark matter", "galaxy clusters"], ["mass mapping"])
    assert caption.text == "dark matter, galaxy clusters; mass mapping" == join_caption(
        ["dark matter", "galaxy clusters"], ["mass mapping"])
    assert not caption.truncated and caption.tokens == count_clip_tokens(caption.text) <= 77


def test_long_caption_drops_trailing_items_until_it_fits():
    objects = [f"J{i}1a7 Q{i}9z2 X{i}4k8" for i in range(5)]  # rare strings: many tokens per word
    uses = [f"M{i}3b6 W{i}8y1 Z{i}2p5" for i in range(5)]
    assert count_clip_tokens(join_caption(objects, uses)) > 77
    caption = build_caption(objects, uses)
    assert caption.truncated and caption.tokens <= 77
    assert caption.text.startswith(objects[0]) and uses[0] in caption.text  # the most relevant stay
    assert count_clip_tokens(caption.text) == caption.tokens


# One item per list of 4 rare 24-character words: within the default grammar, far over 77 tokens.
RARE_ITEM = " ".join(["x9q7z3k1v8j2w6p4m5n0b7c3"] * 4)


def test_a_caption_still_too_long_keeps_its_real_token_count():
    caption = build_caption([RARE_ITEM], [RARE_ITEM])
    assert caption.truncated and caption.text == join_caption([RARE_ITEM], [RARE_ITEM])  # CLIP cuts the text
    assert caption.tokens == count_clip_tokens(caption.text) > 77  # not capped: the run's maximum shows it


def test_caption_needs_both_lists():
    with pytest.raises(ValueError):
        build_caption([], ["photometry"])
