"""The report: JSON keys the issue names, the verdict sentence, the markdown table and real PNGs."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from tasks.evaluate import metrics
from tasks.evaluate.report import GalleryHit, ModelEvaluation, build_report, write_report
from tests.tasks.evaluate.conftest import jpeg_bytes


def _evaluation(name: str, noise: float, seed: int) -> ModelEvaluation:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(300, 16))
    texts = images + noise * rng.normal(size=(300, 16))
    proposals = np.arange(300) // 3
    return ModelEvaluation(
        name=name, run="run-1", checkpoint_sha256="c" * 64,
        retrieval=metrics.evaluate_retrieval(images, texts, proposals),
        inbatch100_top10pct=metrics.inbatch_accuracy(images, texts),
        inbatch100_top10pct_t2i=metrics.inbatch_accuracy(images, texts, direction="t2i"),
        histogram=metrics.similarity_histogram(images, texts),
        zeroshot={"top1": 0.4, "top5": 0.8, "chance_top5": 0.1, "n_labelled": 300, "n_in_vocabulary": 250},
        galleries={"globular cluster": [GalleryHit("1", "10", "A <title>", 0.3), GalleryHit("2", "11", "B", 0.2)]},
    )


def _models() -> dict[str, ModelEvaluation]:
    return {"finetuned": _evaluation("finetuned", 0.2, 0), "base": _evaluation("base", 50.0, 1),
            "shuffled": _evaluation("shuffled", 1e4, 2)}


def test_report_json_has_the_fields_and_a_passing_verdict():
    report = build_report(_models(), {"n_items": 300, "n_proposals": 100, "split": "test"})
    for name in ("finetuned", "base", "shuffled"):
        m = report["models"][name]
        for key in ("i2t_top10pct", "t2i_top10pct", "inbatch100_top10pct", "i2t_top1", "curves", "zeroshot"):
            assert key in m
        assert len(m["curves"]["i2t"]["accuracy"]) == 100
    assert report["checks"]["finetuned_beats_base"] is True
    assert report["checks"]["shuffled_at_chance"] is True
    assert "meets the >= 0.5 bar" in report["verdict"] and "within 0.05 of chance" in report["verdict"]


def test_a_weak_model_and_a_leaky_control_are_reported_as_failing():
    models = _models()
    models["finetuned"] = _evaluation("finetuned", 50.0, 5)
    models["shuffled"] = _evaluation("shuffled", 0.2, 6)
    report = build_report(models, {"n_items": 300})
    assert report["checks"]["finetuned_beats_base"] is False
    assert report["checks"]["shuffled_at_chance"] is False
    assert "does NOT meet" in report["verdict"] and "NOT within" in report["verdict"]


def test_without_a_control_the_report_says_so():
    models = _models()
    del models["shuffled"]
    assert "No shuffled control" in build_report(models, {"n_items": 300})["verdict"]


def test_write_report_produces_json_markdown_and_pngs(tmp_path):
    out = write_report(str(tmp_path / "rep"), _models(), {"n_items": 300, "run": "run-1"},
                       images={"1": jpeg_bytes(1), "2": jpeg_bytes(2)})
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert set(report["models"]) == {"finetuned", "base", "shuffled"}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| finetuned |" in md and "paper: fine-tuned on summaries | 0.021 | 0.689" in md
    assert report["verdict"] in md
    for name in ("retrieval_curves.png", "similarity_histograms.png", "gallery_finetuned.png"):
        with Image.open(io.BytesIO((tmp_path / "rep" / name).read_bytes())) as img:
            assert img.format == "PNG" and img.width > 300
            assert np.asarray(img.convert("L")).std() > 5  # something was drawn
        assert name in out
