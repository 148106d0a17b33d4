"""The evaluation report: report.json (machine-readable), report.md (with the paper's numbers) and
PNG figures like the paper's (accuracy vs retrieval fraction, similarity histograms, query galleries).

Figures use matplotlib's object API on the Agg canvas (no pyplot, no display, thread-safe), and
every file is written atomically through storage.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from schemas.records import utcnow
from storage.fs import atomic_write_bytes, atomic_write_text, join
from tasks.evaluate.metrics import RetrievalResult, SimilarityHistogram, chance_accuracy

REPORT_FORMAT = 1
QUALITY_MARGIN = 0.5  # fine-tuned must beat base by this much in held-out i2t top-10%
CHANCE_TOLERANCE = 0.05  # the shuffled control must stay this close to chance

# paper-method.md section 4: whole validation set, image->text, summary captions, ~3,000 images.
PAPER_HEADLINE: dict[str, dict[str, float]] = {
    "fine-tuned on summaries": {"top1": 0.021, "10": 0.689, "20": 0.813, "50": 0.933},
    "fine-tuned on raw abstracts": {"top1": 0.015, "10": 0.671, "20": 0.803, "50": 0.914},
    "from scratch": {"top1": 0.006, "10": 0.445, "20": 0.616, "50": 0.841},
    "base CLIP ViT-B/16": {"top1": 0.001, "10": 0.124, "20": 0.239, "50": 0.570},
    "random": {"top1": 0.0003, "10": 0.100, "20": 0.200, "50": 0.500},
}
PAPER_INBATCH: dict[str, float] = {"raw abstracts": 0.725, "summaries": 0.689, "frozen head": 0.480,
                                   "from scratch": 0.444, "shuffled": 0.099, "base (step 0)": 0.15}


@dataclass(frozen=True)
class GalleryHit:
    obsid: str
    proposal_id: str
    title: str
    score: float


@dataclass
class ModelEvaluation:
    """Everything measured for one model on the held-out split."""

    name: str
    run: str
    checkpoint_sha256: str
    retrieval: RetrievalResult
    inbatch100_top10pct: float
    inbatch100_top10pct_t2i: float
    histogram: SimilarityHistogram
    zeroshot: dict[str, Any] | None = None
    galleries: dict[str, list[GalleryHit]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        r = self.retrieval
        out: dict[str, Any] = {
            "run": self.run,
            "checkpoint_sha256": self.checkpoint_sha256,
            "i2t_top1": r.i2t.top1,
            "i2t_top10pct": r.i2t.at(10),
            "i2t_top20pct": r.i2t.at(20),
            "i2t_top50pct": r.i2t.at(50),
            "t2i_top1": r.t2i.top1,
            "t2i_top10pct": r.t2i.at(10),
            "t2i_top20pct": r.t2i.at(20),
            "t2i_top50pct": r.t2i.at(50),
            "inbatch100_top10pct": self.inbatch100_top10pct,
            "inbatch100_top10pct_t2i": self.inbatch100_top10pct_t2i,
        }
        if r.i2t_proposal is not None and r.t2i_proposal is not None:
            out["proposal_level"] = {
                "i2t_top1": r.i2t_proposal.top1, "i2t_top10pct": r.i2t_proposal.at(10),
                "t2i_top1": r.t2i_proposal.top1, "t2i_top10pct": r.t2i_proposal.at(10),
            }
        out["curves"] = r.to_dict()
        out["similarity"] = self.histogram.to_dict()
        if self.zeroshot is not None:
            out["zeroshot"] = self.zeroshot
        out["galleries"] = {q: [h.__dict__ for h in hits] for q, hits in self.galleries.items()}
        out["info"] = self.info
        return out


def quality_checks(models: Mapping[str, ModelEvaluation], n_items: int) -> dict[str, Any]:
    """The issue's quality bar, computed (not asserted): margin over base, shuffled near chance."""
    chance = chance_accuracy(10, n_items) if n_items else float("nan")
    checks: dict[str, Any] = {"chance_i2t_top10pct": chance, "margin_required": QUALITY_MARGIN,
                              "chance_tolerance": CHANCE_TOLERANCE}
    ft, base, shuf = models.get("finetuned"), models.get("base"), models.get("shuffled")
    if ft is not None and base is not None:
        delta = ft.retrieval.i2t.at(10) - base.retrieval.i2t.at(10)
        checks["finetuned_minus_base_i2t_top10pct"] = delta
        checks["finetuned_beats_base"] = bool(delta >= QUALITY_MARGIN)
    if shuf is not None:
        gap = abs(shuf.retrieval.i2t.at(10) - chance)
        checks["shuffled_minus_chance_i2t_top10pct"] = shuf.retrieval.i2t.at(10) - chance
        checks["shuffled_at_chance"] = bool(gap <= CHANCE_TOLERANCE)
    return checks


def verdict(models: Mapping[str, ModelEvaluation], checks: Mapping[str, Any], n_items: int) -> str:
    parts = []
    if "finetuned_beats_base" in checks:
        ft, base = models["finetuned"].retrieval.i2t.at(10), models["base"].retrieval.i2t.at(10)
        met = "meets" if checks["finetuned_beats_base"] else "does NOT meet"
        parts.append(
            f"On the held-out split ({n_items} images) the fine-tuned model beats the base model by "
            f"{checks['finetuned_minus_base_i2t_top10pct']:+.3f} in image->text top-10% ({ft:.3f} vs {base:.3f}), "
            f"which {met} the >= {QUALITY_MARGIN} bar."
        )
    else:
        parts.append("The fine-tuned / base comparison is missing (both models are needed).")
    if "shuffled_at_chance" in checks:
        shuf = models["shuffled"].retrieval.i2t.at(10)
        within = "within" if checks["shuffled_at_chance"] else "NOT within"
        parts.append(
            f"The shuffled control scores {shuf:.3f}, {within} {CHANCE_TOLERANCE} of chance "
            f"({checks['chance_i2t_top10pct']:.3f})."
        )
    else:
        parts.append("No shuffled control was evaluated (train one with shuffled pairs to check chance).")
    return " ".join(parts)


def build_report(models: Mapping[str, ModelEvaluation], meta: Mapping[str, Any]) -> dict[str, Any]:
    n = int(meta.get("n_items", 0))
    checks = quality_checks(models, n)
    return {
        "format": REPORT_FORMAT,
        "created_at": utcnow().isoformat(),
        **dict(meta),
        "chance": {"i2t_top1": 1.0 / n if n else None, "i2t_top10pct": checks["chance_i2t_top10pct"]},
        "models": {name: ev.summary() for name, ev in models.items()},
        "checks": checks,
        "verdict": verdict(models, checks, n),
        "paper": {"headline_i2t": PAPER_HEADLINE, "inbatch100_top10pct": PAPER_INBATCH},
    }


# -- markdown -------------------------------------------------------------------------------------

def _f(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3f}"


def render_markdown(report: Mapping[str, Any], plots: Sequence[str]) -> str:
    lines = [
        f"# Evaluation: {report.get('run', '')}",
        "",
        f"Dataset version `{report.get('dataset_version', '')}`, split `{report.get('split', '')}`: "
        f"{report.get('n_items', 0)} images from {report.get('n_proposals', 0)} proposals, "
        f"{report.get('caption_source', 'summary')} captions. Retrieval is over the whole split "
        "(exact item unless marked proposal-level).",
        "",
        f"**{report['verdict']}**",
        "",
        "| model | i2t top-1 | i2t 10% | i2t 20% | i2t 50% | t2i 10% | in-batch-100 top-10% "
        "| proposal i2t 10% | zero-shot top-5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        zs = m.get("zeroshot") or {}
        prop = m.get("proposal_level") or {}
        lines.append(
            f"| {name} | {_f(m['i2t_top1'])} | {_f(m['i2t_top10pct'])} | {_f(m['i2t_top20pct'])} | "
            f"{_f(m['i2t_top50pct'])} | {_f(m['t2i_top10pct'])} | {_f(m['inbatch100_top10pct'])} | "
            f"{_f(prop.get('i2t_top10pct'))} | {_f(zs.get('top5'))} |"
        )
    chance = report.get("chance", {})
    lines.append(f"| chance (this split) | {_f(chance.get('i2t_top1'))} | {_f(chance.get('i2t_top10pct'))} "
                 "| 0.200 | 0.500 | - | 0.100 | - | - |")
    for name, row in PAPER_HEADLINE.items():
        inb = {"fine-tuned on summaries": 0.689, "fine-tuned on raw abstracts": 0.725, "from scratch": 0.444,
               "base CLIP ViT-B/16": 0.15, "random": 0.1}.get(name)
        lines.append(f"| paper: {name} | {_f(row['top1'])} | {_f(row['10'])} | {_f(row['20'])} | "
                     f"{_f(row['50'])} | - | {_f(inb)} | - | - |")
    lines += ["", "The paper's rows are its whole-validation-set numbers (3,000 real HST images); "
              "they are a reference, not the same data.", ""]
    zs_rows = [(n, m["zeroshot"]) for n, m in report["models"].items() if m.get("zeroshot")]
    if zs_rows:
        lines += ["## Zero-shot description (77 curated classes)", "",
                  "| model | top-1 | top-5 | chance top-5 | extended top-5 | images scored |", "|---|---|---|---|---|---|"]
        for name, zs in zs_rows:
            lines.append(f"| {name} | {_f(zs.get('top1'))} | {_f(zs.get('top5'))} | {_f(zs.get('chance_top5'))} | "
                         f"{_f(zs.get('extended_top5'))} | {zs.get('n_in_vocabulary', 0)} / {zs.get('n_labelled', 0)} |")
        lines.append("")
    lines += ["## Figures", ""] + [f"![{p}]({p})" for p in plots] + [""]
    first = next(iter(report["models"].values()), None)
    if first and first.get("galleries"):
        lines += ["## Query galleries", ""]
        for name, m in report["models"].items():
            lines.append(f"### {name}")
            for query, hits in m["galleries"].items():
                shown = ", ".join(f"{h['proposal_id']} ({h['score']:.2f})" for h in hits[:5])
                lines.append(f"- *{query}*: proposals {shown}")
            lines.append("")
    return "\n".join(lines)


# -- figures --------------------------------------------------------------------------------------

def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def plot_retrieval_curves(models: Mapping[str, ModelEvaluation]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for ax, direction in zip(axes, ("i2t", "t2i"), strict=True):
        for i, (name, ev) in enumerate(models.items()):
            color = f"C{i}"
            curve = getattr(ev.retrieval, direction)
            x = [0.0] + curve.fractions_pct
            ax.plot(x, [0.0] + curve.accuracy, color=color, label=name)
            prop = getattr(ev.retrieval, f"{direction}_proposal")
            if prop is not None:
                ax.plot(x, [0.0] + prop.accuracy, color=color, linestyle="--", alpha=0.6,
                        label=f"{name} (proposal)")
        ax.plot([0, 100], [0, 1], color="gray", linestyle=":", label="random")
        if direction == "i2t":
            for label, key, marker in (("paper fine-tuned", "fine-tuned on summaries", "*"),
                                       ("paper base", "base CLIP ViT-B/16", "x")):
                row = PAPER_HEADLINE[key]
                ax.scatter([10, 20, 50], [row["10"], row["20"], row["50"]], marker=marker, color="k",
                           label=label, zorder=3)
        ax.set_xlabel("retrieval fraction (%)")
        ax.set_ylabel("retrieval accuracy")
        ax.set_title("image -> text" if direction == "i2t" else "text -> image")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    return _png(fig)


def plot_similarity_histograms(models: Mapping[str, ModelEvaluation]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * max(1, len(models)), 3.5))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(models))))
    for ax, (name, ev) in zip(axes, models.items(), strict=False):
        h = ev.histogram
        edges = np.asarray(h.edges)
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        ax.bar(centers, h.true_counts, width=width, alpha=0.6, label="true pairs")
        ax.bar(centers, h.shuffled_counts, width=width, alpha=0.6, label="shuffled pairs")
        ax.set_title(name)
        ax.set_xlabel("cosine similarity")
        ax.legend(fontsize=7)
    return _png(fig)


def _thumbnail(data: bytes | None, size: int = 96) -> np.ndarray:
    if not data:
        return np.full((size, size, 3), 255, dtype=np.uint8)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            canvas = Image.new("RGB", (size, size), (255, 255, 255))
            canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
            return np.asarray(canvas)
    except OSError:
        return np.full((size, size, 3), 255, dtype=np.uint8)


def plot_gallery(ev: ModelEvaluation, images: Mapping[str, bytes], k: int = 6) -> bytes:
    """Rows: queries; columns: the top-k held-out images with proposal id and score."""
    from matplotlib.figure import Figure

    queries = list(ev.galleries)
    rows = max(1, len(queries))
    fig = Figure(figsize=(1.6 * k + 1.8, 1.7 * rows))
    axes = np.atleast_2d(fig.subplots(rows, k, squeeze=False))
    for r, query in enumerate(queries):
        hits = ev.galleries[query][:k]
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(hits):
                ax.imshow(_thumbnail(images.get(hits[c].obsid)))
                ax.set_title(f"{hits[c].proposal_id} ({hits[c].score:.2f})", fontsize=7)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(query, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"{ev.name}: top held-out images per query", fontsize=9)
    return _png(fig)


def write_report(
    out_dir: str,
    models: Mapping[str, ModelEvaluation],
    meta: Mapping[str, Any],
    images: Mapping[str, bytes] | None = None,
) -> dict[str, str]:
    """Write report.json, report.md and the PNG figures under out_dir; returns name -> path."""
    report = build_report(models, meta)
    plots = {"retrieval_curves.png": plot_retrieval_curves(models),
             "similarity_histograms.png": plot_similarity_histograms(models)}
    for name, ev in models.items():
        if ev.galleries:
            plots[f"gallery_{name}.png"] = plot_gallery(ev, images or {})
    outputs: dict[str, str] = {}
    for filename, data in plots.items():
        atomic_write_bytes(join(out_dir, filename), data)
        outputs[filename] = join(out_dir, filename)
    report["plots"] = sorted(plots)
    atomic_write_text(join(out_dir, "report.md"), render_markdown(report, sorted(plots)))
    outputs["report.md"] = join(out_dir, "report.md")
    # report.json last: its presence marks a complete report.
    atomic_write_text(join(out_dir, "report.json"), json.dumps(_finite(report), indent=2, allow_nan=False))
    outputs["report.json"] = join(out_dir, "report.json")
    return outputs


def _finite(value: Any) -> Any:
    """Strict JSON: NaN and infinities (an empty split, a missing model) become null."""
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
