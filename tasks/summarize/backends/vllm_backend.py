"""vLLM offline: every pending abstract in one `LLM.chat` call, under vLLM's structured outputs.

Each request carries `StructuredOutputsParams(json=<Summary schema>)` (vLLM >= 0.12; the old
`guided_json` is gone) with `disable_any_whitespace`, so xgrammar cannot spend the token budget on
whitespace. All conversations go in one call so vLLM's scheduler keeps the GPU full (continuous
batching); that, not a faster model, is what makes ~4,400 abstracts fit in minutes (docs/summarize.md).
vLLM is an optional extra, imported only when this backend is created.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_json_schema
from tasks.summarize.backends.base import RawOutput, missing_extra
from tasks.summarize.prompt import PromptTemplate, load_prompt

log = logging.getLogger(__name__)

DEFAULT_VLLM_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


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
        self.schema = summary_json_schema(limits)
        self.llm = vllm.LLM(
            model=self.model_id,
            tensor_parallel_size=params.tensor_parallel_size,
            max_model_len=params.max_model_len,
            gpu_memory_utilization=params.gpu_memory_utilization,
            seed=params.seed,
            structured_outputs_config={"backend": "auto"},
        )
        tokenizer = self.llm.get_tokenizer()
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
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

    def generate(self, abstracts: Sequence[str], sampling: SamplingConfig) -> list[RawOutput]:
        prompts = [self.prompt.render(a, self.limits) for a in abstracts]
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
