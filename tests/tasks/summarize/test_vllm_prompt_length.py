"""The vLLM backend's prompt-length guard, without vLLM: a fake engine and a fake tokenizer.

vLLM fails a whole `LLM.chat` call when one prompt does not fit the context, so prompts longer
than max_model_len - max_new_tokens tokens are held back and reported, and only the rest are sent.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from schemas.errors import InputError
from schemas.summary import SamplingConfig, SummaryLimits
from tasks.summarize.backends.vllm_backend import VLLMBackend, oversized_prompts
from tasks.summarize.prompt import load_prompt


class WordTokenizer:
    """One token per word; the chat template adds two."""

    chat_template = "{{ user }}"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [0] * (len(text.split()) + (1 if add_special_tokens else 0))

    def apply_chat_template(self, conversation, tokenize: bool, add_generation_prompt: bool) -> str:
        assert not tokenize and add_generation_prompt
        return f"<user> {conversation[0]['content']} <assistant>"


class FakeEngine:
    """Answers every conversation it is sent with one summary; records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def chat(self, conversations, params, use_tqdm: bool):
        self.sent += [c[0]["content"] for c in conversations]
        completion = SimpleNamespace(text='{"objects_and_phenomena": ["dust"], "science_use_cases": ["photometry"]}',
                                     token_ids=[1, 2, 3], finish_reason="stop")
        return [SimpleNamespace(outputs=[completion], prompt_token_ids=[0] * 9) for _ in conversations]


def _backend(max_model_len: int) -> VLLMBackend:
    backend = VLLMBackend.__new__(VLLMBackend)  # no vllm here: the engine is the fake above
    backend.prompt, backend.limits, backend.max_model_len = load_prompt("v1"), SummaryLimits(), max_model_len
    backend.tokenizer, backend.has_chat_template, backend.llm = WordTokenizer(), True, FakeEngine()
    backend._sampling_params = lambda sampling: None
    return backend


def test_oversized_prompts_are_those_over_the_limit_with_their_lengths():
    prompts = ["one two", "one two three four", "one two three"]
    assert oversized_prompts(prompts, lambda p: len(p.split()), 3) == {1: 4}
    assert oversized_prompts(prompts, lambda p: len(p.split()), 4) == {}
    assert oversized_prompts([], lambda p: 0, 1) == {}


def test_too_long_prompts_are_reported_and_the_rest_are_sent():
    backend = _backend(max_model_len=0)
    sampling = SamplingConfig(max_new_tokens=100)
    short, long = "Dust in galaxies.", " ".join(["word"] * 400)
    template_words = backend.prompt_tokens(backend.prompt.render(short, backend.limits))
    backend.max_model_len = template_words + 100 + 50  # room for the short prompt, not for 400 more words
    outputs = backend.generate([short, long, short], sampling)
    assert [o.failure for o in outputs] == ["", "prompt_too_long", ""]
    assert outputs[0].text.startswith("{") and outputs[2].output_tokens == 3
    assert f"{backend.prompt_tokens(backend.prompt.render(long, backend.limits))} tokens" in outputs[1].detail
    assert "max_new_tokens 100" in outputs[1].detail
    assert len(backend.llm.sent) == 2 and all(long not in p for p in backend.llm.sent)


def test_nothing_is_sent_when_no_prompt_fits():
    backend = _backend(max_model_len=120)
    outputs = backend.generate(["Dust in galaxies."], SamplingConfig(max_new_tokens=100))
    assert [o.failure for o in outputs] == ["prompt_too_long"] and backend.llm.sent == []


def test_the_chat_template_counts_toward_the_length():
    backend = _backend(max_model_len=1000)
    assert backend.prompt_tokens("a b c") == 5
    backend.has_chat_template = False
    assert backend.prompt_tokens("a b c") == 4  # the plain prompt, with the tokenizer's special token


def test_an_output_limit_that_leaves_no_room_is_a_user_error():
    with pytest.raises(InputError, match="max_model_len"):
        _backend(max_model_len=256).generate(["Dust."], SamplingConfig(max_new_tokens=256))
