"""The evaluate stage: `run_evaluate(params) -> StageResult`, writing reports/<run>/ and index/.

    reports/<run>/report.json, report.md, *.png   the comparison (see report.py)
    reports/<run>/manifest.json                   written last: inputs (dataset digest, every model's
                                                  checkpoint sha256, ground truth sha256) + config
                                                  (params, and the evaluation code's version)
    index/<dataset version>-<sha16>/              the fine-tuned model's search index (see index.py)

Every model (fine-tuned, base, controls) is measured on the same held-out examples. The stage is
cached on the checkpoint hashes, the dataset version, the params and the code: an unchanged
manifest returns at once. reports/<run>/ holds the report of the last configuration evaluated
(another split, say, replaces it): its manifest is deleted before a new report is written, so a
report is trusted only once its own manifest stands beside it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.errors import InputError
from schemas.evaluate import HELDOUT_SPLITS, EvaluateParams
from schemas.manifest import Manifest
from schemas.stage import StageResult
from schemas.vocabulary import PAPER_QUERIES
from storage import DataLayout, ImageStore
from storage.fs import atomic_write_text, exists, join, open_fs, read_bytes
from tasks.code_version import code_version
from tasks.evaluate import metrics
from tasks.evaluate.embed import ClipModel, embed_images, embed_texts, resolve_device
from tasks.evaluate.index import index_manifest, index_name, write_index
from tasks.evaluate.models import RunRef, list_runs, load_clip, resolve_run
from tasks.evaluate.report import GalleryHit, ModelEvaluation, write_report
from tasks.evaluate.zeroshot import GroundTruth, load_ground_truth, zeroshot_scores

log = logging.getLogger(__name__)

STAGE = "evaluate"
EVAL_FORMAT = 1  # bump for a change to reports from outside EVAL_CODE (a dependency, say)
# The code whose edits change a report: its version is part of the manifest's config. Not the
# search page and API (web, search): they read reports and indexes, they do not make them. In:
# the image normalisation embedding uses and the loader that rebuilds trained models.
EVAL_CODE = ("tasks.evaluate.stage", "tasks.evaluate.metrics", "tasks.evaluate.embed", "tasks.evaluate.models",
             "tasks.evaluate.report", "tasks.evaluate.zeroshot", "tasks.evaluate.index", "schemas.evaluate",
             "schemas.vocabulary", "tasks.dataset.augment", "tasks.train.export")
MANIFEST_FILE = "manifest.json"
MAX_AUTO_VARIANTS = 6
_COLUMNS = ["obsid", "obs_id", "proposal_id", "title", "target", "instrument", "image_sha256",
            "caption_summary", "caption_abstract", "image"]

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class EvaluationPlan:
    """Everything resolved before any model is loaded; `inputs` + `config` are the cache key."""

    run: RunRef
    dataset_version: str
    dataset_digest: str
    caption_source: str
    models: dict[str, tuple[RunRef, str]]  # name -> (run, 'final' | 'base')
    shas: dict[str, str]
    ground_truth_sha256: str
    report_dir: str
    inputs: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def plan_evaluation(params: EvaluateParams) -> EvaluationPlan:
    """Resolve the run, its dataset version and the models to compare; no model is loaded."""
    from tasks.dataset import open_dataset  # the dataset stack loads only when evaluating

    run = resolve_run(params.data, params.run)
    final_meta = run.model_meta("final")  # a run without a finished model fails here, by name
    version = params.dataset_version or final_meta.get("dataset_version") or run.dataset_version or "latest"
    dataset = open_dataset(params.data, version, verify=False)
    caption_source = params.caption_source or run.train_config.get("caption_source", "summary")

    models: dict[str, tuple[RunRef, str]] = {"finetuned": (run, "final"), "base": (run, "base")}
    if params.shuffled_run:
        models["shuffled"] = (resolve_run(params.data, params.shuffled_run), "final")
    for name, ref in sorted(params.variants.items()):
        models[name] = (resolve_run(params.data, ref), "final")
    if params.auto_variants:
        taken = {r.name for r, which in models.values() if which == "final"}
        extra = [r for r in list_runs(params.data) if r.finished and r.name not in taken
                 and r.dataset_version == dataset.version]
        for ref in extra[:MAX_AUTO_VARIANTS]:
            label = "shuffled" if ref.is_shuffled_control and "shuffled" not in models else _variant_label(ref)
            if label not in models:
                models[label] = (ref, "final")
        if len(extra) > MAX_AUTO_VARIANTS:
            log.warning("%d more runs on dataset %s not evaluated (name them in variants)",
                        len(extra) - MAX_AUTO_VARIANTS, dataset.version)
    shas = {name: ref.checkpoint_sha256(which) for name, (ref, which) in models.items()}

    truth_sha = ""
    if params.ground_truth:
        if not exists(params.ground_truth):
            raise InputError(f"ground truth file {params.ground_truth} does not exist")
        truth_sha = hashlib.sha256(read_bytes(params.ground_truth)).hexdigest()

    inputs = {"dataset": dataset.manifest.digest, **{f"model:{n}": s for n, s in sorted(shas.items())}}
    if truth_sha:
        inputs["ground_truth"] = truth_sha
    config = {**params.cache_config(), "format": EVAL_FORMAT, "code": code_version(*EVAL_CODE),
              "resolved_run": run.name, "dataset_version": dataset.version, "caption_source": caption_source}
    return EvaluationPlan(run=run, dataset_version=dataset.version, dataset_digest=dataset.manifest.digest,
                          caption_source=caption_source, models=models, shas=shas, ground_truth_sha256=truth_sha,
                          report_dir=join(DataLayout(params.data).reports, run.name), inputs=inputs, config=config)


def _variant_label(ref: RunRef) -> str:
    preset = str(ref.train_config.get("preset", "run")).lower()
    tail = ref.name.rsplit("-", 1)[-1][:6].lower()
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in f"{preset}-{tail}")
    return label if label[:1].isalpha() else f"v-{label}"


@dataclass
class HeldOut:
    """The held-out examples every model is measured on (stored order)."""

    obsids: list[str]
    proposal_ids: list[str]
    titles: list[str]
    captions: list[str]
    images: list[bytes]
    skipped_no_caption: int = 0

    def __len__(self) -> int:
        return len(self.obsids)


def load_held_out(data: str, version: str, split: str, caption_source: str, max_items: int | None) -> HeldOut:
    from tasks.dataset import open_dataset

    dataset = open_dataset(data, version, verify=True)  # the first read: every shard checked against the manifest
    caption_col = "caption_summary" if caption_source == "summary" else "caption_abstract"
    out = HeldOut([], [], [], [], [])
    batches = (b for part in HELDOUT_SPLITS[split]
               for b in dataset.iter_batches(part, ["obsid", "proposal_id", "title", caption_col, "image"]))
    for batch in batches:
        for row in batch.to_pylist():
            caption = (row.get(caption_col) or "").strip()
            if not caption:
                out.skipped_no_caption += 1
                continue
            out.obsids.append(str(row["obsid"]))
            out.proposal_ids.append(str(row["proposal_id"]))
            out.titles.append(row.get("title") or "")
            out.captions.append(caption)
            out.images.append(row["image"]["bytes"])
            if max_items is not None and len(out) >= max_items:
                return out
    if len(out) < 2:
        raise InputError(
            f"dataset {version}: split {split!r} has {len(out)} example(s) with a {caption_source} caption "
            f"({out.skipped_no_caption} without); evaluation needs at least 2 (try split 'heldout')")
    return out


def _embed_captions(clip: ClipModel, captions: list[str], batch_size: int) -> np.ndarray:
    """Images of one proposal share a caption: embed each distinct caption once."""
    unique = list(dict.fromkeys(captions))
    emb = embed_texts(clip, unique, batch_size=max(batch_size, 64))
    where = {c: i for i, c in enumerate(unique)}
    return emb[[where[c] for c in captions]]


def evaluate_model(
    name: str, clip: ClipModel, held: HeldOut, params: EvaluateParams, truth: GroundTruth | None,
    progress: Progress | None = None,
) -> tuple[ModelEvaluation, np.ndarray]:
    started = time.perf_counter()
    done = [0]

    def step(n: int) -> None:
        done[0] += n
        if progress:
            progress(f"embedding ({name})", done[0], len(held))

    image_emb = embed_images(clip, held.images, batch_size=params.batch_size, names=held.obsids, progress=step)
    text_emb = _embed_captions(clip, held.captions, params.batch_size)
    retrieval = metrics.evaluate_retrieval(image_emb, text_emb, held.proposal_ids)
    galleries = {}
    query_emb = embed_texts(clip, list(PAPER_QUERIES))
    for query, q in zip(PAPER_QUERIES, query_emb, strict=True):
        scores = image_emb @ q
        top = np.argsort(-scores, kind="stable")[: params.gallery_k]
        galleries[query] = [GalleryHit(held.obsids[i], held.proposal_ids[i], held.titles[i], float(scores[i]))
                            for i in top]
    zs = zeroshot_scores(image_emb, held.obsids, truth, clip, template=params.zeroshot_template) if truth else None
    evaluation = ModelEvaluation(
        name=name, run=clip.name, checkpoint_sha256=clip.checkpoint_sha256, retrieval=retrieval,
        inbatch100_top10pct=metrics.inbatch_accuracy(image_emb, text_emb, seed=params.seed),
        inbatch100_top10pct_t2i=metrics.inbatch_accuracy(image_emb, text_emb, seed=params.seed, direction="t2i"),
        histogram=metrics.similarity_histogram(image_emb, text_emb, seed=params.seed),
        zeroshot=zs, galleries=galleries,
        info={"seconds": round(time.perf_counter() - started, 2), "device": str(clip.device)},
    )
    log.info("%s: i2t top-10%% %.3f, t2i top-10%% %.3f, in-batch-100 %.3f (%.1f s)", name,
             retrieval.i2t.at(10), retrieval.t2i.at(10), evaluation.inbatch100_top10pct,
             evaluation.info["seconds"])
    return evaluation, image_emb


def build_search_index(params: EvaluateParams, plan: EvaluationPlan, clip: ClipModel,
                       reuse: tuple[list[str], np.ndarray] | None = None,
                       progress: Progress | None = None) -> str:
    """Index every split of the dataset version with the fine-tuned model (skipped if current)."""
    from tasks.dataset import open_dataset

    name = index_name(plan.dataset_version, clip.checkpoint_sha256)
    existing = index_manifest(params.data, name)
    if (not params.refresh and existing is not None and existing.inputs.get("dataset") == plan.dataset_digest
            and existing.config.get("checkpoint_sha256") == clip.checkpoint_sha256):
        atomic_write_text(join(DataLayout(params.data).index, "latest"), name + "\n")
        log.info("index %s is current", name)
        return name
    dataset = open_dataset(params.data, plan.dataset_version, verify=False)
    total = sum(dataset.count(s) for s in ("train", "val", "test"))
    images = ImageStore(DataLayout(params.data).images)
    known = dict(zip(reuse[0], range(len(reuse[0])), strict=True)) if reuse else {}
    meta: dict[str, list[str]] = {c: [] for c in ("obsid", "proposal_id", "obs_id", "title", "preview_sha256",
                                                  "split", "target", "instrument")}
    chunks: list[np.ndarray] = []
    done = 0
    for split in ("train", "val", "test"):
        for batch in dataset.iter_batches(split, _COLUMNS, batch_rows=max(params.batch_size, 64)):
            rows = batch.to_pylist()
            todo = [r for r in rows if str(r["obsid"]) not in known]
            fresh = iter(embed_images(clip, [r["image"]["bytes"] for r in todo], batch_size=params.batch_size,
                                      names=[str(r["obsid"]) for r in todo]) if todo else [])
            for r in rows:
                obsid = str(r["obsid"])
                chunks.append(reuse[1][known[obsid]] if obsid in known else next(fresh))  # type: ignore[index]
                sha = r.get("image_sha256") or hashlib.sha256(r["image"]["bytes"]).hexdigest()
                if not images.has(sha):
                    images.put(r["image"]["bytes"])
                for col, value in (("obsid", obsid), ("proposal_id", r["proposal_id"]), ("obs_id", r.get("obs_id")),
                                   ("title", r.get("title")), ("preview_sha256", sha), ("split", split),
                                   ("target", r.get("target")), ("instrument", r.get("instrument"))):
                    meta[col].append(str(value or ""))
            done += len(rows)
            if progress:
                progress("indexing", done, total)
    dim = reuse[1].shape[1] if reuse is not None else (chunks[0].shape[0] if chunks else 0)
    embeddings = np.stack(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
    write_index(params.data, dataset_version=plan.dataset_version, checkpoint_sha256=clip.checkpoint_sha256,
                embeddings=embeddings, metadata=meta, model_name=str(plan.run.model_meta("final").get("model", "")),
                run=plan.run.name, inputs={"dataset": plan.dataset_digest})
    return name


def _cached(params: EvaluateParams, plan: EvaluationPlan) -> StageResult | None:
    if params.refresh or not exists(join(plan.report_dir, "report.json")):
        return None
    manifest = _report_manifest(plan.report_dir)
    if manifest is None:  # none, or damaged: evaluate again
        return None
    if manifest.inputs != plan.inputs or manifest.config != plan.config:
        return None
    if params.build_index and index_manifest(params.data, index_name(plan.dataset_version, plan.shas["finetuned"])) is None:
        return None
    return _result(params, plan, manifest, cached=True)


def report_digest(report_dir: str) -> str | None:
    """The digest of the manifest now beside the report in `report_dir`: whose report it is.

    None when there is none (never finished, or a newer evaluation under way or killed) or it is
    damaged: then the report there belongs to no configuration.
    """
    manifest = _report_manifest(report_dir)
    return manifest.digest if manifest is not None else None


def _report_manifest(report_dir: str) -> Manifest | None:
    """The manifest beside the report in `report_dir`; None when absent or damaged."""
    url = join(report_dir, MANIFEST_FILE)
    if not exists(url):
        return None
    try:
        return Manifest.from_json(read_bytes(url), source=url)
    except ValueError:  # InputError: damaged or tampered
        return None


def report_is_its_own(result: StageResult) -> bool:
    """reports/<run>/ holds the last evaluation of a run, whatever its config: a (cached) evaluate
    result is good only while the manifest there is still its own."""
    return report_digest(result.outputs["report_dir"]) == result.digest


def _forget_manifest(report_dir: str) -> None:
    """Delete the report's manifest: the files about to be replaced no longer match it."""
    fs, path = open_fs(join(report_dir, MANIFEST_FILE))
    if fs.exists(path):
        fs.rm(path)


def _result(params: EvaluateParams, plan: EvaluationPlan, manifest: Manifest, cached: bool) -> StageResult:
    outputs = {"report": join(plan.report_dir, "report.json"), "report_md": join(plan.report_dir, "report.md"),
               "report_dir": plan.report_dir, "run_name": plan.run.name}
    if params.build_index:
        outputs["index"] = join(DataLayout(params.data).index, index_name(plan.dataset_version, plan.shas["finetuned"]))
    return StageResult(stage=STAGE, digest=manifest.digest, cached=cached, outputs=outputs, stats=dict(manifest.stats))


def run_evaluate(params: EvaluateParams, *, progress: Progress | None = None,
                 plan: EvaluationPlan | None = None) -> StageResult:
    """Evaluate the run's fine-tuned model, its base model and any controls; write the report.

    `plan` is `plan_evaluation(params)` when the caller has resolved it already (the flow keys its
    cache on it).
    """
    plan = plan or plan_evaluation(params)
    cached = _cached(params, plan)
    if cached is not None:
        log.info("evaluation of %s on %s is current: nothing to do", plan.run.name, plan.dataset_version)
        return cached
    started = time.perf_counter()
    resolve_device(params.device)  # a 'cuda' request without a GPU fails before any loading
    truth = load_ground_truth(params.ground_truth) if params.ground_truth else None
    held = load_held_out(params.data, plan.dataset_version, params.split, plan.caption_source, params.max_items)
    log.info("evaluating %d models on %d %s examples of %s", len(plan.models), len(held), params.split,
             plan.dataset_version)

    evaluations: dict[str, ModelEvaluation] = {}
    index = ""
    for name, (ref, which) in plan.models.items():
        clip = load_clip(ref, which, params.device, label=f"{ref.name}/{which}")
        evaluation, image_emb = evaluate_model(name, clip, held, params, truth, progress)
        evaluations[name] = evaluation
        if name == "finetuned" and params.build_index:
            reuse = (held.obsids, image_emb) if params.max_items is None else None
            index = build_search_index(params, plan, clip, reuse, progress)
        del clip

    meta = {"run": plan.run.name, "dataset_version": plan.dataset_version, "split": params.split,
            "caption_source": plan.caption_source, "n_items": len(held),
            "n_proposals": len(set(held.proposal_ids)), "skipped_no_caption": held.skipped_no_caption,
            "ground_truth": bool(truth), "index": index, "seconds": round(time.perf_counter() - started, 2)}
    images = dict(zip(held.obsids, held.images, strict=True))
    # From here until the new manifest is written, the files are a mix of the old report and the
    # new one: without a manifest, no configuration takes them for its own.
    _forget_manifest(plan.report_dir)
    write_report(plan.report_dir, evaluations, meta, images)
    ft = evaluations["finetuned"].summary()
    stats = {"n_items": len(held), "finetuned_i2t_top10pct": ft["i2t_top10pct"],
             "base_i2t_top10pct": evaluations["base"].retrieval.i2t.at(10),
             "models": sorted(evaluations), "seconds": meta["seconds"]}
    if "shuffled" in evaluations:
        stats["shuffled_i2t_top10pct"] = evaluations["shuffled"].retrieval.i2t.at(10)
    manifest = Manifest(name="evaluation", inputs=plan.inputs, config=plan.config, stats=stats)
    atomic_write_text(join(plan.report_dir, MANIFEST_FILE), manifest.to_json())  # last: marks completion
    return _result(params, plan, manifest, cached=False)
