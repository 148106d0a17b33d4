"""Zero-shot description: rank the paper's 77 curated classes for each image, and score the ranking
against a ground truth where one exists (the synthetic sky's ground_truth.json).

The pipeline never reads the ground truth; only evaluation does, when it is given the file. Sky
classes outside the 77 (the generator may draw e.g. "comets") cannot be predicted from the 77, so
accuracy is reported two ways: over images with at least one ground-truth class among the 77
(`vocabulary`), and over all images with the vocabulary extended by the sky's own class names
(`extended`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from schemas.errors import InputError
from schemas.vocabulary import CURATED_CLASSES
from storage.fs import exists, read_text
from tasks.evaluate.embed import ClipModel, embed_texts

DEFAULT_TEMPLATE = "{}"


class ProposalTruth(BaseModel):
    model_config = ConfigDict(extra="allow")

    classes: list[str]
    cycle: int | None = None


class ObservationTruth(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    proposal_id: str
    classes: list[str]


class GroundTruth(BaseModel):
    """The synthetic sky's answer key: classes per proposal and per observation (obsid)."""

    model_config = ConfigDict(extra="allow")

    proposals: dict[str, ProposalTruth]
    observations: dict[str, ObservationTruth]

    def classes_for(self, obsid: str) -> list[str]:
        found = self.observations.get(str(obsid))
        return list(found.classes) if found else []

    def class_names(self) -> list[str]:
        names = {c for o in self.observations.values() for c in o.classes}
        names |= {c for p in self.proposals.values() for c in p.classes}
        return sorted(names)


def load_ground_truth(url: str) -> GroundTruth:
    if not exists(url):
        raise InputError(f"ground truth file {url} does not exist")
    try:
        return GroundTruth.model_validate(json.loads(read_text(url)))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"ground truth file {url} is not JSON: {err}") from None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"ground truth file {url}: {where}: {first['msg']}") from None


@dataclass(frozen=True)
class ClassRanking:
    """Top classes for one image, best first, with cosine similarities."""

    classes: list[str]
    scores: list[float]

    def to_dict(self) -> dict[str, object]:
        return {"classes": self.classes, "scores": self.scores}


def class_embeddings(clip: ClipModel, classes: Sequence[str] = CURATED_CLASSES,
                     template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    return embed_texts(clip, [template.format(c) for c in classes])


def rank_classes(image_emb: np.ndarray, class_emb: np.ndarray, classes: Sequence[str], k: int = 5) -> list[ClassRanking]:
    """The top-k classes per image row by cosine similarity (ties broken by vocabulary order)."""
    if class_emb.shape[0] != len(classes):
        raise ValueError(f"{class_emb.shape[0]} class embeddings for {len(classes)} class names")
    k = max(1, min(k, len(classes)))
    sim = np.asarray(image_emb, dtype=np.float32) @ np.asarray(class_emb, dtype=np.float32).T
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return [
        ClassRanking([classes[j] for j in row], [float(sim[i, j]) for j in row]) for i, row in enumerate(order)
    ]


def _norm(name: str) -> str:
    return " ".join(name.lower().split())


def topk_accuracy(rankings: Sequence[ClassRanking], truths: Sequence[Sequence[str]], k: int) -> float:
    """Fraction of images with at least one true class among their top k (NaN if none scored)."""
    if len(rankings) != len(truths):
        raise ValueError("one ground-truth list per ranking")
    if not rankings:
        return float("nan")
    hits = [bool({_norm(c) for c in r.classes[:k]} & {_norm(t) for t in truth})
            for r, truth in zip(rankings, truths, strict=True)]
    return float(np.mean(hits))


def zeroshot_scores(
    image_emb: np.ndarray,
    obsids: Sequence[str],
    truth: GroundTruth,
    clip: ClipModel,
    *,
    template: str = DEFAULT_TEMPLATE,
) -> dict[str, object]:
    """Top-1 / top-5 accuracy of the zero-shot ranking, on the 77 classes and on the extended list."""
    curated = list(CURATED_CLASSES)
    curated_norm = {_norm(c) for c in curated}
    truths = [truth.classes_for(o) for o in obsids]
    labelled = [i for i, t in enumerate(truths) if t]
    in_vocab = [i for i in labelled if {_norm(c) for c in truths[i]} & curated_norm]
    extra = [c for c in truth.class_names() if _norm(c) not in curated_norm]

    out: dict[str, object] = {"n_labelled": len(labelled), "n_in_vocabulary": len(in_vocab),
                              "classes_outside_vocabulary": extra, "template": template}
    if in_vocab:
        ranks = rank_classes(image_emb[in_vocab], class_embeddings(clip, curated, template), curated, k=5)
        sub = [truths[i] for i in in_vocab]
        out["top1"] = topk_accuracy(ranks, sub, 1)
        out["top5"] = topk_accuracy(ranks, sub, 5)
        out["chance_top5"] = _chance(sub, curated, 5)
    if labelled:
        extended = curated + extra
        ranks = rank_classes(image_emb[labelled], class_embeddings(clip, extended, template), extended, k=5)
        sub = [truths[i] for i in labelled]
        out["extended_top1"] = topk_accuracy(ranks, sub, 1)
        out["extended_top5"] = topk_accuracy(ranks, sub, 5)
        out["extended_chance_top5"] = _chance(sub, extended, 5)
    return out


def _chance(truths: Sequence[Sequence[str]], vocabulary: Sequence[str], k: int) -> float:
    """Expected top-k accuracy of a random ranking: 1 - C(n-m, k) / C(n, k) per image, where m
    of the n vocabulary classes are true."""
    from math import comb

    vocab = {_norm(c) for c in vocabulary}
    n = len(vocab)
    vals = []
    for t in truths:
        m = len({_norm(c) for c in t} & vocab)
        vals.append(1.0 - comb(n - m, k) / comb(n, k))
    return float(np.mean(vals)) if vals else float("nan")
