"""Presets are data, addressable by name; the paper preset is the paper's recipe."""

from __future__ import annotations

import json

import pytest

from schemas.errors import InputError
from schemas.train import TrainParams
from tasks.train.presets import get_preset, list_presets, resolve_config


def test_bundled_presets_are_listed():
    assert {"tiny", "paper"} <= set(list_presets())


def test_paper_preset_is_the_papers_recipe():
    cfg = resolve_config(TrainParams(preset="paper"))
    assert (cfg.model, cfg.pretrained, cfg.batch_size, cfg.lr, cfg.weight_decay) == ("ViT-B-16", "openai", 32, 1e-5, 1e-3)
    assert (cfg.warmup_steps, cfg.schedule, cfg.steps, cfg.loss) == (2000, "constant", 20000, "clip")
    assert cfg.fixed_temperature is None  # learned exp(logit_scale), not the reference's mistake


def test_overrides_win_and_from_scratch_drops_the_weights():
    cfg = resolve_config(TrainParams(preset="paper", steps=50, lr=1e-6, schedule="cosine", from_scratch=True))
    assert (cfg.steps, cfg.lr, cfg.schedule, cfg.pretrained) == (50, 1e-6, "cosine", "")


def test_a_head_alone_means_the_frozen_head_variant():
    cfg = resolve_config(TrainParams(preset="paper", head="mlp"))
    assert (cfg.freeze, cfg.head, cfg.head_hidden) == ("both", "mlp", 1024)


@pytest.mark.parametrize("params, words", [
    (dict(preset="paper", freeze="both"), "nothing to train"),
    (dict(preset="tiny", freeze="image"), "random weights"),
    (dict(preset="paper", cuda_graphs=True, compile_mode="reduce-overhead"), "pick one"),
    (dict(preset="paper", from_scratch=True, pretrained="openai"), "contradict each other"),
])
def test_incoherent_options_are_input_errors(params, words):
    with pytest.raises(InputError, match=words):
        resolve_config(TrainParams(**params))


def test_a_preset_can_be_a_json_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**get_preset("tiny"), "steps": 7}))
    assert get_preset(str(path))["steps"] == 7
    with pytest.raises(InputError, match="unknown training preset"):
        get_preset("nope")
    path.write_text(json.dumps({"model": "x", "learning_rate": 1}))
    with pytest.raises(InputError, match="learning_rate"):
        get_preset(str(path))


@pytest.mark.parametrize("key, value", [("steps", 0), ("image_size", 8), ("val_pairs", 10), ("resize_to", 4)])
def test_a_preset_value_out_of_bounds_is_an_input_error_naming_it(tmp_path, monkeypatch, key, value):
    import tasks.train.presets as presets

    (tmp_path / "tiny.json").write_text(json.dumps({**get_preset("tiny"), key: value}))
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)  # an edited bundled preset
    with pytest.raises(InputError, match=f"preset 'tiny'.*{key}"):
        resolve_config(TrainParams(preset="tiny"))


def test_the_config_hash_ignores_logging_but_not_the_recipe():
    a = resolve_config(TrainParams(preset="tiny"))
    b = resolve_config(TrainParams(preset="tiny", val_every=7, checkpoint_every=3, device="cpu"))
    c = resolve_config(TrainParams(preset="tiny", lr=0.1))
    assert a.hashed_fields() == b.hashed_fields() != c.hashed_fields()


def test_the_config_hash_covers_the_loader_worker_layout():
    # Each worker streams its own slice through its own shuffle buffer, with per-worker seeds for
    # crops and caption windows: another worker count is other batches (0 and 1: one layout).
    zero, one, four = (resolve_config(TrainParams(preset="tiny", workers=w)) for w in (0, 1, 4))
    assert zero.hashed_fields() == one.hashed_fields() != four.hashed_fields()
