import numpy as np
import torch

from tasks.dataset.text import choose_caption, context_length, sentence_window, split_sentences, tokenize

ABSTRACT = ("Category: Galaxies. " + " ".join(
    f"Sentence number {i} talks about dwarf galaxies and their dark matter halos in some detail." for i in range(12)))


def test_sentences_split_on_terminal_punctuation():
    assert split_sentences("One is here. Two follows! Three? 4 starts a number. e.g. not split") == [
        "One is here.", "Two follows!", "Three?", "4 starts a number. e.g. not split"]


def test_window_is_whole_sentences_within_the_word_budget_after_the_prefix():
    rng = np.random.default_rng(0)
    body_sentences = set(split_sentences(ABSTRACT.removeprefix("Category: Galaxies. ")))
    starts = set()
    for _ in range(50):
        window = sentence_window(ABSTRACT, rng, max_words=40)
        assert window.startswith("Category: Galaxies. ") and len(window.split()) <= 40
        body = split_sentences(window.removeprefix("Category: Galaxies. "))
        assert body and set(body) <= body_sentences
        starts.add(body[0])
    assert len(starts) > 3  # the window moves


def test_an_overlong_first_sentence_is_cut_at_the_budget():
    text = " ".join(["word"] * 100) + "."
    assert len(sentence_window(text, np.random.default_rng(0), 77).split()) == 77


def test_choose_caption_and_tokenize_with_open_clip(tokenizer):
    rng = np.random.default_rng(0)
    assert choose_caption("dwarf galaxies; dark matter", ABSTRACT, "summary", rng) == "dwarf galaxies; dark matter"
    tokens = tokenize(["dwarf galaxies; dark matter", choose_caption("", ABSTRACT, "abstract", rng)], tokenizer)
    assert tokens.dtype == torch.long and tokens.shape == (2, context_length(tokenizer)) == (2, 77)


def test_context_length_comes_from_the_tokenizer():
    import open_clip

    short = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    assert context_length(short) == 16 and tokenize(["a b c"], short).shape == (1, 16)
