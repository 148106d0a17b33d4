"""Models come from open_clip's factory; bad names and checkpoints fail as one-line InputErrors."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch

from schemas.errors import InputError
from tasks.train.model import (
    TINY_MODEL,
    HeadedCLIP,
    check_model_name,
    check_pretrained,
    create_clip,
    freeze_towers,
    register_project_models,
)


def test_the_tiny_config_is_registered_with_open_clip_and_tokenizes_offline():
    register_project_models()
    assert TINY_MODEL in open_clip.list_models()
    assert "siglip" not in TINY_MODEL  # open_clip would fetch a hub tokenizer for such names
    tokens = open_clip.get_tokenizer(TINY_MODEL)(["a barred spiral galaxy"])
    assert tokens.shape == (1, 32)


def test_unknown_model_and_pretrained_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown model name 'ViT-Q-99'"):
        check_model_name("ViT-Q-99")
    check_model_name("ViT-B-16")
    check_pretrained("ViT-B-16", "openai")  # a known tag: fetched (or found cached) at build time
    with pytest.raises(InputError, match="neither a checkpoint file nor an open_clip tag"):
        check_pretrained("ViT-B-16", "not-a-tag")
    with pytest.raises(InputError, match="does not exist"):
        check_pretrained(TINY_MODEL, str(tmp_path / "missing.pt"))


def test_an_incompatible_checkpoint_is_an_input_error_naming_it(tiny_config, tmp_path):
    wrong = tmp_path / "other.pt"
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(3, 3)}}, wrong)
    with pytest.raises(InputError, match="other.pt"):
        create_clip(tiny_config(pretrained=str(wrong)))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="garbage.pt"):
        create_clip(tiny_config(pretrained=str(garbage)))


def test_freezing_is_by_tower_and_covers_the_native_text_tower(tiny_config):
    model = create_clip(tiny_config()).model
    assert isinstance(model, open_clip.CLIP) and not hasattr(model, "text")  # the native text tower
    freeze_towers(model, "text")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {"token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight"} <= frozen
    assert not any(n.startswith("visual.") for n in frozen) and "logit_scale" not in frozen
    freeze_towers(model, "image")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["logit_scale"]


def test_the_mlp_head_starts_as_the_base_model(tiny_config, tmp_path):
    base = create_clip(tiny_config()).model
    path = tmp_path / "base.pt"
    torch.save({"state_dict": base.state_dict()}, path)
    cfg = tiny_config(pretrained=str(path), head="mlp", head_hidden=32)
    headed = create_clip(cfg).model
    assert isinstance(headed, HeadedCLIP) and cfg.freeze == "both"
    trainable = {n for n, p in headed.named_parameters() if p.requires_grad}
    assert trainable == {"base.logit_scale", *(f"{h}.{layer}.{w}" for h in ("image_head", "text_head")
                                               for layer in ("fc1", "fc2") for w in ("weight", "bias"))}
    images = torch.rand(2, 3, 64, 64)
    tokens = open_clip.get_tokenizer(TINY_MODEL)(["a", "b"])
    with torch.no_grad():
        assert torch.allclose(headed.encode_image(images), base.encode_image(images), atol=1e-5)
        assert torch.allclose(headed.encode_text(tokens), base.encode_text(tokens), atol=1e-5)


def test_fixed_temperature_is_held(tiny_config):
    model = create_clip(tiny_config(fixed_temperature=0.05)).model
    assert not model.logit_scale.requires_grad
    assert math.exp(model.logit_scale.item()) == pytest.approx(20.0)


def test_siglip_models_get_a_logit_bias(tiny_config):
    model = create_clip(tiny_config(loss="siglip")).model
    out = model(torch.rand(2, 3, 64, 64), open_clip.get_tokenizer(TINY_MODEL)(["a", "b"]))
    assert len(out) == 4 and out[3].item() == pytest.approx(-10.0)
