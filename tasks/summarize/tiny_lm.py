"""A tiny randomly initialised Llama with a byte-level BPE tokenizer trained here: no hub, no weights.

Its output is gibberish, but it runs the real Outlines + transformers path (grammar compile,
logits processing, left-padded batches, seeded sampling) in seconds on a CPU, which is what the
tests, the CPU benchmark and `--model tiny-random` need (models-notes.md section 1.2). Byte-level
pre-tokenization makes every character, JSON punctuation included, encodable.
"""

from __future__ import annotations

from typing import Any

from schemas.vocabulary import CURATED_CLASSES

TINY_VOCAB_SIZE = 400
# Model shapes by name. "1b" is a Llama-3.2-1B-like stack (16 layers, 2048 wide, grouped-query
# attention) behind the same byte-level tokenizer: gibberish too, but it costs what a real 1B model
# costs per token, so batched-vs-sequential throughput on a GPU is measured on realistic kernels.
RANDOM_SHAPES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8},
}
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _corpus() -> list[str]:
    from tasks.summarize.prompt import load_prompt

    lines = list(CURATED_CLASSES)
    lines += load_prompt("v1").text.splitlines()
    lines += ['{"objects_and_phenomena": ["dark matter", "galaxy clusters"], "science_use_cases": ["mass maps"]}']
    return [line for line in lines if line.strip()] * 4


def build_tiny_lm(seed: int = 0, *, chat_template: bool = False, shape: str = "tiny", device: str = "cpu",
                  dtype: Any = None) -> tuple[Any, Any]:
    """(LlamaForCausalLM, PreTrainedTokenizerFast), deterministic for a seed (and device).

    The weights are initialised directly on `device` in `dtype` (default float32), so a 1B shape
    takes seconds on a GPU instead of a CPU initialisation and a copy.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE, special_tokens=["<|endoftext|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>",
                                     bos_token="<|endoftext|>")
    if chat_template:
        hf_tok.chat_template = TINY_CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(hf_tok), **RANDOM_SHAPES[shape], max_position_embeddings=4096,
                         bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                         pad_token_id=hf_tok.pad_token_id)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default_dtype)
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    return model, hf_tok


def save_tiny_lm(directory: str, seed: int = 0, *, chat_template: bool = False) -> str:
    """Write the tiny model with `save_pretrained`, so it loads like any local model directory."""
    model, tokenizer = build_tiny_lm(seed, chat_template=chat_template)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
