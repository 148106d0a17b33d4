"""The evaluate stage end to end on a toy dataset version and real (short) training runs:
report keys, the quality verdict, the search index, caching, and clear errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from schemas.errors import InputError
from schemas.evaluate import EvaluateParams
from tasks.evaluate import open_index, plan_evaluation, report_digest, run_evaluate


@pytest.fixture(scope="module")
def evaluated(trained_data):
    params = EvaluateParams(data=trained_data["data"], ground_truth=trained_data["ground_truth"], device="cpu",
                            run="colors")
    return params, run_evaluate(params)


def test_report_compares_finetuned_base_and_the_shuffled_control(evaluated):
    params, result = evaluated
    assert not result.cached and result.stage == "evaluate"
    report = json.loads(Path(result.outputs["report"]).read_text())
    assert set(report["models"]) == {"finetuned", "base", "shuffled"}
    for m in report["models"].values():
        for key in ("i2t_top10pct", "t2i_top10pct", "inbatch100_top10pct", "i2t_top1", "curves", "zeroshot"):
            assert key in m
        assert 0.0 <= m["i2t_top10pct"] <= 1.0
    assert report["split"] == "heldout" and report["n_items"] == (4 + 20) * 3 and report["n_proposals"] == 24
    ft, base = report["models"]["finetuned"], report["models"]["base"]
    assert ft["i2t_top10pct"] > base["i2t_top10pct"]
    assert ft["zeroshot"]["extended_top5"] > base["zeroshot"]["extended_top5"]
    assert report["verdict"] in Path(result.outputs["report_md"]).read_text()
    for plot in ("retrieval_curves.png", "similarity_histograms.png", "gallery_finetuned.png"):
        assert (Path(result.outputs["report_dir"]) / plot).stat().st_size > 1000
    assert len(ft["galleries"]) == 10  # the paper's ten queries


def test_index_covers_every_split_with_the_finetuned_checkpoint(evaluated, trained_data):
    params, result = evaluated
    index = open_index(params.data)
    assert Path(result.outputs["index"]).name == index.name
    assert len(index) == (30 + 4 + 20) * 3
    plan = plan_evaluation(params)
    assert index.checkpoint_sha256 == plan.shas["finetuned"] != plan.shas["base"]
    assert set(index.metadata["split"]) == {"train", "val", "test"}
    assert all(index.has_preview(s) for s in index.metadata["preview_sha256"])


def test_held_out_examples_never_come_from_train(trained_data):
    from tasks.evaluate.stage import load_held_out

    test = load_held_out(trained_data["data"], trained_data["version"], "test", "summary", None)
    both = load_held_out(trained_data["data"], trained_data["version"], "heldout", "summary", None)
    capped = load_held_out(trained_data["data"], trained_data["version"], "heldout", "summary", 10)
    assert len(test) == 60 and len(both) == 72 and len(capped) == 10
    assert set(test.obsids) < set(both.obsids)
    assert all(c.endswith("light") for c in both.captions)  # the summary captions, not the abstracts


def test_unchanged_inputs_are_cached(evaluated):
    params, first = evaluated
    again = run_evaluate(params)
    assert again.cached and again.digest == first.digest


def test_an_edit_to_the_evaluation_code_invalidates_the_report(evaluated, monkeypatch):
    from tasks.code_version import code_version
    from tasks.evaluate import stage

    params, first = evaluated
    plan = plan_evaluation(params)
    assert plan.config["code"] == code_version(*stage.EVAL_CODE)
    assert stage._cached(params, plan).digest == first.digest
    monkeypatch.setattr(stage, "code_version", lambda *modules: "0" * 64)  # the hash of an edited tree
    assert stage._cached(params, plan_evaluation(params)) is None


def test_cache_key_follows_the_checkpoint_and_ground_truth(evaluated, trained_data):
    params, _ = evaluated
    plan = plan_evaluation(params)
    assert plan.inputs["model:finetuned"] == plan.shas["finetuned"]
    assert "ground_truth" in plan.inputs and plan.dataset_version == trained_data["version"]
    no_truth = plan_evaluation(params.model_copy(update={"ground_truth": None}))
    assert no_truth.inputs != plan.inputs


def test_bad_inputs_fail_with_a_clear_error(trained_data, tmp_path):
    data = trained_data["data"]
    with pytest.raises(InputError, match="run 'missing' does not exist"):
        plan_evaluation(EvaluateParams(data=data, run="missing"))
    empty = Path(data) / "runs" / "half-done"
    (empty / "checkpoints").mkdir(parents=True, exist_ok=True)
    with pytest.raises(InputError, match="half-done has no 'final' model.*no checkpoints"):
        plan_evaluation(EvaluateParams(data=data, run="half-done"))
    with pytest.raises(InputError, match="ground truth file .* does not exist"):
        plan_evaluation(EvaluateParams(data=data, run="colors", ground_truth=str(tmp_path / "nope.json")))
    with pytest.raises(InputError, match="no finished training run"):
        plan_evaluation(EvaluateParams(data=str(tmp_path)))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    from tasks.evaluate.zeroshot import load_ground_truth

    with pytest.raises(InputError, match="not JSON"):
        load_ground_truth(str(bad))


@pytest.fixture
def fresh_data(trained_data, tmp_path) -> str:
    """The trained data root without reports: tests that overwrite reports leave the others' alone."""
    copy = tmp_path / "data"
    shutil.copytree(trained_data["data"], copy, ignore=shutil.ignore_patterns("reports", "index", "state"))
    return str(copy)


def test_a_report_killed_before_its_manifest_is_never_taken_for_another_configuration(fresh_data, monkeypatch):
    from tasks.evaluate import stage

    heldout = EvaluateParams(data=fresh_data, run="colors", split="heldout", build_index=False, device="cpu")
    first = run_evaluate(heldout)
    write = stage.atomic_write_text

    def killed_at_the_manifest(url: str, text: str) -> None:
        if url.endswith("/manifest.json"):
            raise KeyboardInterrupt("killed")
        write(url, text)

    monkeypatch.setattr(stage, "atomic_write_text", killed_at_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        run_evaluate(heldout.model_copy(update={"split": "test"}))  # its report.json written, no manifest
    monkeypatch.undo()
    report_dir = first.outputs["report_dir"]
    assert json.loads(Path(first.outputs["report"]).read_text())["split"] == "test"
    assert report_digest(report_dir) is None  # heldout's manifest went before test's report came

    again = run_evaluate(heldout)
    report = json.loads(Path(again.outputs["report"]).read_text())
    assert not again.cached and again.digest == first.digest == report_digest(report_dir)
    assert report["split"] == "heldout" and report["n_items"] == again.stats["n_items"] == (4 + 20) * 3
