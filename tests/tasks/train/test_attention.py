"""The fused self-attention computes nn.MultiheadAttention's function from the same parameters."""

from __future__ import annotations

import copy

import open_clip
import pytest
import torch
from torch import nn

from tasks.train.attention import FusedSelfAttention, use_fused_attention
from tasks.train.model import TINY_MODEL, create_clip, register_project_models


def _pair(dropout: float = 0.0, **kwargs) -> tuple[nn.MultiheadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(32, 4, batch_first=True, dropout=dropout, **kwargs)
    with torch.no_grad():  # nonzero biases, so a dropped bias would show
        reference.in_proj_bias.normal_()
        reference.out_proj.bias.normal_()
    fused = copy.deepcopy(reference)
    assert use_fused_attention(fused) == 1 and type(fused) is FusedSelfAttention
    return reference, fused


def _causal(tokens: int, kind: str, batch: int = 3, heads: int = 4) -> torch.Tensor:
    blocked = torch.ones(tokens, tokens, dtype=torch.bool).triu(1)  # True: may not attend (MHA's convention)
    if kind == "bool":
        return blocked
    if kind == "float":  # open_clip's causal mask: -inf above the diagonal, cast to the input dtype
        return torch.zeros(tokens, tokens).masked_fill(blocked, float("-inf"))
    if kind == "per_head":  # 3-D: one (tokens x tokens) mask per batch row and head
        scores = torch.randn(batch * heads, tokens, tokens)
        return scores.masked_fill(blocked, float("-inf"))
    return None


@pytest.mark.parametrize("mask", [None, "float", "bool", "per_head"])
def test_outputs_and_gradients_equal_multihead_attention(mask):
    reference, fused = _pair()
    attn_mask = _causal(7, mask) if mask else None
    x = torch.randn(3, 7, 32)
    x_ref, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, _ = reference(x_ref, x_ref, x_ref, need_weights=False, attn_mask=attn_mask)
    out_fused, weights = fused(x_fused, x_fused, x_fused, need_weights=False, attn_mask=attn_mask)
    assert weights is None
    torch.testing.assert_close(out_fused, out_ref, rtol=1e-5, atol=1e-6)
    target = torch.randn_like(out_ref)
    ((out_ref - target) ** 2).sum().backward()
    ((out_fused - target) ** 2).sum().backward()
    torch.testing.assert_close(x_fused.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    for (name, p_ref), p_fused in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(p_fused.grad, p_ref.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_what_it_does_not_cover_goes_to_multihead_attentions_own_forward():
    reference, fused = _pair()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 6, 32)
    padding = torch.tensor([[False] * 5 + [True], [False] * 6])
    cases = [
        ((x, memory, memory), {"need_weights": False}),  # cross-attention
        ((x, x, x), {"need_weights": True}),  # attention weights asked for
        ((memory, memory, memory), {"need_weights": False, "key_padding_mask": padding}),
        ((x[0], x[0], x[0]), {"need_weights": False}),  # unbatched
    ]
    for args, kwargs in cases:
        out_ref, w_ref = reference(*args, **kwargs)
        out_fused, w_fused = fused(*args, **kwargs)
        torch.testing.assert_close(out_fused, out_ref)
        assert (w_ref is None) == (w_fused is None)


def test_a_mask_of_the_wrong_shape_is_refused_as_multihead_attention_refuses_it():
    reference, fused = _pair()
    x = torch.randn(3, 7, 32)
    for wrong in (torch.zeros(1, 7), torch.zeros(7, 6), torch.zeros(4, 7, 7)):
        for module in (reference, fused):
            with pytest.raises(RuntimeError, match="attn_mask"):
                module(x, x, x, need_weights=False, attn_mask=wrong)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_nested_inputs_go_to_multihead_attentions_own_forward():
    reference, fused = _pair()
    reference.eval()
    fused.eval()
    nested = torch.nested.nested_tensor([torch.randn(5, 32), torch.randn(3, 32)])
    with torch.no_grad():  # the inference fast path is nn.MultiheadAttention's only nested route
        out_ref, _ = reference(nested, nested, nested, need_weights=False)
        out_fused, _ = fused(nested, nested, nested, need_weights=False)
    for a, b in zip(out_ref.unbind(), out_fused.unbind(), strict=True):
        torch.testing.assert_close(b, a)


def test_only_batch_first_packed_self_attention_modules_are_swapped():
    model = nn.ModuleList([
        nn.MultiheadAttention(32, 4, batch_first=True),
        nn.MultiheadAttention(32, 4, batch_first=False),  # sequence-first: left alone
        nn.MultiheadAttention(32, 4, batch_first=True, kdim=16, vdim=16),  # separate k/v projections
        nn.MultiheadAttention(32, 4, batch_first=True, add_bias_kv=True),
    ])
    assert use_fused_attention(model) == 1
    assert [type(m) is FusedSelfAttention for m in model] == [True, False, False, False]
    assert use_fused_attention(model) == 0  # already swapped


def test_dropout_is_applied_in_training_and_not_in_eval():
    _reference, fused = _pair(dropout=0.5)
    x = torch.randn(2, 6, 32)
    fused.eval()
    torch.testing.assert_close(fused(x, x, x, need_weights=False)[0], fused(x, x, x, need_weights=False)[0])
    fused.train()
    torch.manual_seed(1)
    first = fused(x, x, x, need_weights=False)[0]
    torch.manual_seed(2)
    assert not torch.allclose(first, fused(x, x, x, need_weights=False)[0])


def test_the_trainer_swaps_both_towers_and_a_checkpoint_loads_in_plain_open_clip(tiny_config, tmp_path):
    register_project_models()
    created = create_clip(tiny_config(), "cpu")
    swapped = created.info["fused_attention_blocks"]
    blocks = [m for m in created.model.modules() if isinstance(m, nn.MultiheadAttention)]
    assert swapped == len(blocks) > 0 and all(type(m) is FusedSelfAttention for m in blocks)
    assert create_clip(tiny_config(fused_attention=False), "cpu").info.get("fused_attention_blocks") is None

    path = tmp_path / "weights.pt"
    torch.save(created.model.state_dict(), path)
    plain = open_clip.create_model(TINY_MODEL, pretrained=str(path))
    assert not any(type(m) is FusedSelfAttention for m in plain.modules())
    images = torch.randn(2, 3, 64, 64)
    tokens = open_clip.get_tokenizer(TINY_MODEL)(["a spiral galaxy", "a globular cluster"])
    created.model.train()
    plain.train()  # training mode: nn.MultiheadAttention's own path, not its inference fast path
    for ours, theirs in zip(created.model(images, tokens)[:2], plain(images, tokens)[:2], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_setting_does_not_change_the_run_name(tiny_config):
    assert tiny_config().hashed_fields() == tiny_config(fused_attention=False).hashed_fields()
