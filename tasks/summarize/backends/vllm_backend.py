"""vLLM offline: a whole batch of abstracts in one `LLM.chat` call, under vLLM's structured outputs.

Each request carries `StructuredOutputsParams(json=<Summary schema>)` (vLLM >= 0.12; the old
`guided_json` is gone) with `disable_any_whitespace`, so xgrammar cannot spend the token budget on
whitespace. A batch's conversations (up to 1,024, tasks.summarize.stage.VLLM_BATCH_PROMPTS) go in
one call so vLLM's scheduler keeps the GPU full (continuous batching); that, not a faster model, is
what makes ~4,400 abstracts fit in minutes (docs/summarize.md).

A prompt longer than the context leaves room for (max_model_len - max_new_tokens tokens, counted
with the engine's own tokenizer) is not sent: vLLM would fail the whole call for it. It comes back
as a `prompt_too_long` output and is quarantined with its length.
vLLM is an optional extra, imported only when this backend is created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from schemas.errors import InputError, missing_extra
from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_json_schema
from tasks.summarize.backends.base import RawOutput
from tasks.summarize.prompt import PromptTemplate, load_prompt

log = logging.getLogger(__name__)

DEFAULT_VLLM_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def oversized_prompts(prompts: Sequence[str], count_tokens: Callable[[str], int],
                      max_prompt_tokens: int) -> dict[int, int]:
    """{index: token count} of the prompts longer than `max_prompt_tokens`, in order."""
    counts = ((i, count_tokens(p)) for i, p in enumerate(prompts))
    return {i: n for i, n in counts if n > max_prompt_tokens}


class VLLMBackend:
    name = "vllm"
    deterministic = False

    def __init__(self, params: SummarizeParams, *, prompt: PromptTemplate, limits: SummaryLimits):
        try:
            import vllm
        except ImportError:
            raise missing_extra("vllm", "vllm", "the 'vllm' summarizer backend") from None
        self.vllm = vllm
        self.model_id = params.model or DEFAULT_VLLM_MODEL
        self.prompt = prompt
        self.limits = limits
        self.max_model_len = params.max_model_len
        self.schema = summary_json_schema(limits)
        self.llm = vllm.LLM(
            model=self.model_id,
            tensor_parallel_size=params.tensor_parallel_size,
            max_model_len=params.max_model_len,
            gpu_memory_utilization=params.gpu_memory_utilization,
            seed=params.seed,
            structured_outputs_config={"backend": "auto"},
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        log.info("vllm backend: %s, tp=%d, max_model_len=%d, chat template: %s", self.model_id,
                 params.tensor_parallel_size, params.max_model_len, self.has_chat_template)

    def _sampling_params(self, sampling: SamplingConfig) -> Any:
        from vllm.sampling_params import SamplingParams, StructuredOutputsParams  # not exported at top level

        return SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,  # vLLM's default is 16: always explicit
            seed=sampling.seed,
            structured_outputs=StructuredOutputsParams(json=self.schema, disable_any_whitespace=True),
        )

    def prompt_tokens(self, prompt: str) -> int:
        """Tokens of `prompt` as the engine will see it: through the chat template when there is one."""
        if not self.has_chat_template:
            return len(self.tokenizer.encode(prompt))
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)
        return len(self.tokenizer.encode(text, add_special_tokens=False))  # the template holds BOS itself

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        prompts = [self.prompt.render(a, self.limits) for a in abstracts]
        room = self.max_model_len - sampling.max_new_tokens
        if room < 1:
            raise InputError(f"max_new_tokens {sampling.max_new_tokens} leaves no room for a prompt in "
                             f"max_model_len {self.max_model_len}: raise --max-model-len")
        too_long = oversized_prompts(prompts, self.prompt_tokens, room)
        outputs = {i: RawOutput("", failure="prompt_too_long",
                                detail=f"the prompt has {tokens} tokens; max_model_len {self.max_model_len} - "
                                       f"max_new_tokens {sampling.max_new_tokens} leaves {room}")
                   for i, tokens in too_long.items()}
        send = [i for i in range(len(prompts)) if i not in too_long]
        if send:  # the others only: one prompt too long would fail vLLM's whole call
            outputs.update(zip(send, self._generate([prompts[i] for i in send], sampling), strict=True))
        return [outputs[i] for i in range(len(prompts))]

    def _generate(self, prompts: list[str], sampling: SamplingConfig) -> list[RawOutput]:
        params = self._sampling_params(sampling)
        if self.has_chat_template:
            results = self.llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
        else:
            results = self.llm.generate(prompts, params, use_tqdm=False)
        outputs = []
        for result in results:
            completion = result.outputs[0]
            outputs.append(RawOutput(
                completion.text,
                input_tokens=len(result.prompt_token_ids or ()),
                output_tokens=len(completion.token_ids),
                hit_token_limit=completion.finish_reason == "length",
            ))
        return outputs

    def close(self) -> None:
        self.llm = None


def create_vllm_backend(params: SummarizeParams) -> VLLMBackend:
    return VLLMBackend(params, prompt=load_prompt(params.prompt_version), limits=params.limits)
