"""Retrieval metrics of the paper (paper-method.md section 4), as pure numpy functions.

"Top-k%" is the fraction of queries whose true partner ranks within the top
K = max(1, floor(k * N / 100)) of N candidates by cosine similarity. The floor is the paper's; the
max(1, ...) only matters below N = 100/k, where the paper's cut-off would be 0 and no hit possible.

Ties are frequent, not exotic: images of one proposal share a caption, so their text embeddings
are identical. A rank is therefore a pair (greater, tied): how many wrong candidates score strictly
higher than the true partner, and how many score exactly the same. The hit rate at cut-off K is
the expectation under a random order of the tied block, clip((K - greater) / (tied + 1), 0, 1).
This keeps every metric invariant to the order of the items and exact for distinct scores.

Exact-item and proposal-level retrieval are one computation with different groups: the true
partners of query i are the candidates with the same group label (exact item: groups = 0..N-1;
proposal level: the proposal ids), and the best-scoring true partner counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# Retrieval fractions in percent for the curves: 1% .. 100% (the top-1 item is reported apart).
DEFAULT_FRACTIONS_PCT: tuple[float, ...] = tuple(float(k) for k in range(1, 101))
_BLOCK_ROWS = 1024  # similarity rows computed at once: bounds memory at N x 1024 floats


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def cutoff(fraction_pct: float, n: int) -> int:
    """How many of n ranked candidates the top `fraction_pct` percent covers (at least 1)."""
    if n <= 0:
        raise ValueError("cutoff needs at least one candidate")
    return max(1, int(np.floor(fraction_pct * n / 100.0 + 1e-9)))


def _group_codes(groups: Sequence[object] | np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups must have one label per item ({n}), got shape {labels.shape}")
    _, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(n)


def _ranks_block(sim: np.ndarray, query_codes: np.ndarray, cand_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    same = query_codes[:, None] == cand_codes[None, :]
    if not same.any(axis=1).all():
        raise ValueError("every query needs at least one true partner among the candidates")
    best = np.where(same, sim, -np.inf).max(axis=1, keepdims=True)
    wrong = ~same
    greater = ((sim > best) & wrong).sum(axis=1)
    tied = ((sim == best) & wrong).sum(axis=1)
    return greater, tied


def partner_ranks(sim: np.ndarray, groups: Sequence[object] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(greater, tied) per row of a square similarity matrix whose true pairs share a group.

    Row i is a query, column j a candidate; item i's own partner is column i (and, with groups,
    every column of the same group).
    """
    sim = np.asarray(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be a square matrix, got shape {sim.shape}")
    codes = _group_codes(groups, sim.shape[0])
    greater = np.empty(sim.shape[0], dtype=np.int64)
    tied = np.empty(sim.shape[0], dtype=np.int64)
    for start in range(0, sim.shape[0], _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, sim.shape[0])
        greater[start:stop], tied[start:stop] = _ranks_block(sim[start:stop], codes[start:stop], codes)
    return greater, tied


def partner_ranks_embeddings(
    queries: np.ndarray, candidates: np.ndarray, groups: Sequence[object] | np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Like `partner_ranks` on cosine similarities, computed block by block (never N x N at once)."""
    q = normalize(queries)
    c = normalize(candidates)
    if q.shape != c.shape:
        raise ValueError(f"queries {q.shape} and candidates {c.shape} must be paired one to one")
    codes = _group_codes(groups, q.shape[0])
    greater = np.empty(q.shape[0], dtype=np.int64)
    tied = np.empty(q.shape[0], dtype=np.int64)
    for start in range(0, q.shape[0], _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, q.shape[0])
        sim = q[start:stop] @ c.T
        greater[start:stop], tied[start:stop] = _ranks_block(sim, codes[start:stop], codes)
    return greater, tied


def hit_rate(greater: np.ndarray, tied: np.ndarray, k: int) -> float:
    """Expected fraction of queries whose true partner is within the top k (random tie order)."""
    if len(greater) == 0:
        return float("nan")
    hits = np.clip((k - greater) / (tied + 1.0), 0.0, 1.0)
    return float(hits.mean())


@dataclass(frozen=True)
class RetrievalCurve:
    """Accuracy vs retrieval fraction for one direction, plus the top-1 item accuracy."""

    n: int
    top1: float
    fractions_pct: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    def at(self, fraction_pct: float) -> float:
        for f, a in zip(self.fractions_pct, self.accuracy, strict=True):
            if abs(f - fraction_pct) < 1e-9:
                return a
        raise KeyError(f"fraction {fraction_pct}% is not on this curve")

    def to_dict(self) -> dict[str, object]:
        return {"n": self.n, "top1": self.top1, "fractions_pct": self.fractions_pct, "accuracy": self.accuracy}


def curve_from_ranks(
    greater: np.ndarray, tied: np.ndarray, fractions_pct: Sequence[float] = DEFAULT_FRACTIONS_PCT
) -> RetrievalCurve:
    n = len(greater)
    return RetrievalCurve(
        n=n,
        top1=hit_rate(greater, tied, 1),
        fractions_pct=[float(f) for f in fractions_pct],
        accuracy=[hit_rate(greater, tied, cutoff(f, n)) for f in fractions_pct],
    )


def retrieval_curve(
    sim: np.ndarray,
    groups: Sequence[object] | np.ndarray | None = None,
    fractions_pct: Sequence[float] = DEFAULT_FRACTIONS_PCT,
) -> RetrievalCurve:
    """Row-wise retrieval on a similarity matrix: image->text for sim[i, j] = cos(image_i, text_j)."""
    return curve_from_ranks(*partner_ranks(sim, groups), fractions_pct)


@dataclass(frozen=True)
class RetrievalResult:
    """Both directions, exact item and proposal level."""

    i2t: RetrievalCurve
    t2i: RetrievalCurve
    i2t_proposal: RetrievalCurve | None = None
    t2i_proposal: RetrievalCurve | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"i2t": self.i2t.to_dict(), "t2i": self.t2i.to_dict()}
        if self.i2t_proposal is not None and self.t2i_proposal is not None:
            out["i2t_proposal"] = self.i2t_proposal.to_dict()
            out["t2i_proposal"] = self.t2i_proposal.to_dict()
        return out


def evaluate_retrieval(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    proposal_ids: Sequence[object] | np.ndarray | None = None,
    fractions_pct: Sequence[float] = DEFAULT_FRACTIONS_PCT,
) -> RetrievalResult:
    """Image->text and text->image curves over the whole set; proposal level when ids are given."""
    i2t = curve_from_ranks(*partner_ranks_embeddings(image_emb, text_emb), fractions_pct)
    t2i = curve_from_ranks(*partner_ranks_embeddings(text_emb, image_emb), fractions_pct)
    if proposal_ids is None:
        return RetrievalResult(i2t=i2t, t2i=t2i)
    i2t_p = curve_from_ranks(*partner_ranks_embeddings(image_emb, text_emb, proposal_ids), fractions_pct)
    t2i_p = curve_from_ranks(*partner_ranks_embeddings(text_emb, image_emb, proposal_ids), fractions_pct)
    return RetrievalResult(i2t=i2t, t2i=t2i, i2t_proposal=i2t_p, t2i_proposal=t2i_p)


def inbatch_accuracy(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    *,
    batch_size: int = 100,
    fraction_pct: float = 10.0,
    seed: int = 0,
    direction: str = "i2t",
) -> float:
    """The paper's validation metric: top-k% inside batches of `batch_size` (top-10 of 100).

    Items are shuffled with `seed` (a fixed, reproducible batching) and cut into full batches; the
    remainder joins no batch unless there are fewer items than one batch, when all form one.
    """
    image_emb = normalize(image_emb)
    text_emb = normalize(text_emb)
    n = len(image_emb)
    if n == 0:
        return float("nan")
    if direction not in ("i2t", "t2i"):
        raise ValueError(f"direction must be 'i2t' or 't2i', got {direction!r}")
    order = np.random.default_rng(seed).permutation(n)
    size = min(batch_size, n)
    hits: list[float] = []
    for start in range(0, n - size + 1, size):
        idx = order[start:start + size]
        q, c = (image_emb[idx], text_emb[idx]) if direction == "i2t" else (text_emb[idx], image_emb[idx])
        greater, tied = partner_ranks(q @ c.T)
        hits.append(hit_rate(greater, tied, cutoff(fraction_pct, size)))
    return float(np.mean(hits))


@dataclass(frozen=True)
class SimilarityHistogram:
    """Cosine similarities of true pairs and of shuffled (mismatched) pairs, on shared bins."""

    edges: list[float]
    true_counts: list[int]
    shuffled_counts: list[int]
    true_mean: float
    shuffled_mean: float

    def to_dict(self) -> dict[str, object]:
        return {
            "edges": self.edges,
            "true_counts": self.true_counts,
            "shuffled_counts": self.shuffled_counts,
            "true_mean": self.true_mean,
            "shuffled_mean": self.shuffled_mean,
        }


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation with no fixed point (for n >= 2): a shift of a random order."""
    if n < 2:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.roll(order, 1)
    return out


def similarity_histogram(
    image_emb: np.ndarray, text_emb: np.ndarray, *, bins: int = 50, seed: int = 0
) -> SimilarityHistogram:
    image_emb = normalize(image_emb)
    text_emb = normalize(text_emb)
    true_sim = np.einsum("ij,ij->i", image_emb, text_emb)
    shuffled_sim = np.einsum("ij,ij->i", image_emb, text_emb[derangement(len(text_emb), seed)])
    edges = np.linspace(-1.0, 1.0, bins + 1)
    true_counts, _ = np.histogram(true_sim, bins=edges)
    shuffled_counts, _ = np.histogram(shuffled_sim, bins=edges)
    return SimilarityHistogram(
        edges=[float(e) for e in edges],
        true_counts=[int(c) for c in true_counts],
        shuffled_counts=[int(c) for c in shuffled_counts],
        true_mean=float(true_sim.mean()) if len(true_sim) else float("nan"),
        shuffled_mean=float(shuffled_sim.mean()) if len(shuffled_sim) else float("nan"),
    )


def chance_accuracy(fraction_pct: float, n: int) -> float:
    """What a model that ranks at random scores at top-`fraction_pct`% of n candidates."""
    return cutoff(fraction_pct, n) / n
