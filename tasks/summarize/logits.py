"""Grammar-constrained decoding for a whole batch: one mask write, one copy, one fill per step.

Outlines 1.3.3's transformers logits processor (`OutlinesCoreLogitsProcessor._bias_logits_torch`)
works one sequence at a time: per sequence and step it reads the last token with `.item()`
(a device sync), fills that sequence's bitmask, copies it to the device, calls a `torch.compile`d
masking kernel (a Dynamo guard check and several launches) on `logits[i]`, and copies the bitmask
back to the host (another sync). So a step costs a fixed amount *per sequence*, and a batch of 16
pays it 16 times while the model's forward barely grows.

`GrammarLogitsProcessor` keeps the same per-sequence state (one outlines_core `Guide` each,
advanced by its last token with the same rule Outlines uses, so it allows exactly the same
tokens) but does the tensor work once per step for the whole batch:

1. one device-to-host read of the batch's last tokens (`input_ids[:, -1].tolist()`);
2. per sequence, `Guide.advance` and `Guide.write_mask_into` straight into its row of one
   preallocated (pinned, on CUDA) int32 bitmask: two calls into outlines_core's Rust, no tensors;
3. one host-to-device copy of the bitmask;
4. one vectorised unpack (`bitmask & bit == 0`) and one `masked_fill_` over the (batch, vocab) logits.

Sequences that emitted a stop token are skipped (generate only pads them now), so the CPU work
shrinks as a batch finishes. `compile_grammar` builds the Index exactly as Outlines'
`Generator(model, SchemaModel)` does (same JSON schema term, regex and vocabulary), so the
grammar is the one the backend always used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from transformers import LogitsProcessor


def compile_grammar(tokenizer: Any, schema_model: type) -> Any:
    """The outlines_core `Index` of a pydantic model's JSON schema over a transformers tokenizer.

    The same steps as `outlines.Generator(outlines.from_transformers(model, tokenizer), schema_model)`
    (default backend outlines_core): the model's JSON schema term, outlines_core's regex for it
    (default whitespace), and Outlines' vocabulary conversion of the tokenizer (EOS kept apart).
    Compiling is the expensive part (seconds for a large vocabulary): do it once per run.
    """
    from outlines.backends.outlines_core import OutlinesCoreBackend
    from outlines.models.transformers import TransformerTokenizer
    from outlines.types.dsl import JsonSchema, python_types_to_terms
    from outlines_core import Index
    from outlines_core.json_schema import build_regex_from_schema

    term = python_types_to_terms(schema_model)
    if not isinstance(term, JsonSchema):
        raise TypeError(f"{schema_model!r} does not give a JSON schema grammar (got {type(term).__name__})")
    regex = build_regex_from_schema(term.schema, term.whitespace_pattern)
    wrapped = TransformerTokenizer(tokenizer)  # sets pad = eos when the tokenizer has no pad token, as Outlines does
    vocabulary = OutlinesCoreBackend.create_outlines_core_vocabulary(
        tokenizer.get_vocab(), tokenizer.eos_token_id, tokenizer.eos_token, wrapped.convert_token_to_string)
    return Index(regex, vocabulary)


class GrammarLogitsProcessor(LogitsProcessor):
    """Mask a batch's logits to the tokens its grammar allows, for one `model.generate` call.

    Make a new one per call (it holds the batch's guide states). `prompt_length` is the padded
    prompt width of that call: a call whose `input_ids` are that wide is the first step (no token
    to advance by yet). `stop_token_ids` end a sequence (generate pads it afterwards).
    """

    def __init__(self, index: Any, batch_size: int, prompt_length: int, stop_token_ids: Iterable[int]):
        from outlines_core import Guide

        self.guides = [Guide(index) for _ in range(batch_size)]
        self.prompt_length = prompt_length
        self.stop_token_ids = frozenset(stop_token_ids)
        self.done = [False] * batch_size  # a stop token was emitted: generate only pads the row now
        self.steps = 0
        self._host: torch.Tensor | None = None  # (batch, words) int32 bitmask the guides write into
        self._device: torch.Tensor | None = None  # its copy on the logits' device
        self._bits: torch.Tensor | None = None  # (32,) int32: 1 << k, on the logits' device
        self._copied: Any = None  # CUDA event: the last host-to-device copy is done (host buffer reusable)

    def _allocate(self, scores: torch.Tensor) -> None:
        words = (scores.shape[1] + 31) // 32  # bits past the vocabulary stay 0: never allowed
        on_cuda = scores.device.type == "cuda"
        self._host = torch.zeros((len(self.guides), words), dtype=torch.int32, pin_memory=on_cuda)
        self._device = torch.empty_like(self._host, device=scores.device) if on_cuda else self._host
        # 1 << 31 is the int32 sign bit; `&` with it still isolates bit 31.
        self._bits = torch.tensor([1 << k for k in range(31)] + [-(1 << 31)], dtype=torch.int32, device=scores.device)
        self._copied = torch.cuda.Event() if on_cuda else None

    def _advance(self, input_ids: torch.LongTensor) -> None:
        last = input_ids[:, -1].tolist()  # the one device sync of the step
        for row, (guide, token) in enumerate(zip(self.guides, last, strict=True)):
            if self.done[row]:
                continue
            if token in self.stop_token_ids:
                self.done[row] = True
                continue
            # Outlines' rule (outlines_core issue 227): a finished guide only moves on a token it accepts.
            if guide.is_finished() and not guide.accepts_tokens([token]):
                continue
            try:
                guide.advance(token_id=token, return_tokens=False)
            except ValueError as err:
                raise RuntimeError(f"sequence {row} produced token {token}, which its grammar does not allow at "
                                   f"step {self.steps}: the logits mask was not applied ({err})") from err

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.guides):
            raise ValueError(f"processor made for a batch of {len(self.guides)}, called with {input_ids.shape[0]}")
        if self._host is None:
            self._allocate(scores)
        if input_ids.shape[1] > self.prompt_length:
            self._advance(input_ids)
        host = self._host
        if self._copied is not None and self.steps:
            self._copied.synchronize()  # the previous step's copy has read the buffer (already true after tolist)
        words, pointer, row_bytes = host.shape[1], host.data_ptr(), host.shape[1] * host.element_size()
        for row, guide in enumerate(self.guides):
            if not self.done[row]:  # a finished row keeps its last mask (its final state's: EOS allowed)
                guide.write_mask_into(pointer + row * row_bytes, words, host.element_size())
        device = self._device
        if device is not host:
            device.copy_(host, non_blocking=True)
            self._copied.record(torch.cuda.current_stream(device.device))
        refused = (device.unsqueeze(-1) & self._bits).view(device.shape[0], -1)[:, :scores.shape[1]] == 0
        self.steps += 1
        return scores.masked_fill_(refused, float("-inf"))
