"""Retrieval metrics of the paper (paper-method.md section 4), as pure numpy functions.

"Top-k%" is the fraction of queries whose true partner ranks within the top
K = max(1, floor(k * N / 100)) of N candidates by cosine similarity. The floor is the paper's; the
max(1, ...) only matters below N = 100/k, where the paper's cut-off would be 0 and no hit possible.

Ties are frequent, not exotic: images of one proposal share a caption, so their text embeddings
are identical. Exact-item and proposal-level retrieval are one computation with different groups:
the true partners of query i are the candidates with the same group label (exact item: groups =
0..N-1; proposal level: the proposal ids), and the best-scoring true partner counts. A rank is
therefore (greater, tied, correct): how many wrong candidates score strictly higher than the best
true partner, how many wrong ones score exactly the same, and how many true partners share that
best score (itself included; always 1 for exact items, often more at proposal level, where the
images of a proposal share one caption). The hit rate at cut-off K is the expectation under a
random order of the tied block of tied + correct candidates, which starts at rank greater + 1:
with m = clip(K - greater, 0, tied + correct) of the block inside the cut-off, the query misses
only if all m are wrong, so

    hit = 1 - C(tied, m) / C(tied + correct, m)

which for one correct item is clip((K - greater) / (tied + 1), 0, 1), computed as exactly that.
This keeps every metric invariant to the order of the items and exact for distinct scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

# Retrieval fractions in percent for the curves: 1% .. 100% (the top-1 item is reported apart).
DEFAULT_FRACTIONS_PCT: tuple[float, ...] = tuple(float(k) for k in range(1, 101))
_BLOCK_ROWS = 1024  # similarity rows computed at once: bounds memory at N x 1024 floats

Ranks = tuple[np.ndarray, np.ndarray, np.ndarray]  # (greater, tied, correct) per query


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


def _ranks_block(sim: np.ndarray, start: int, codes: np.ndarray | None) -> Ranks:
    """Ranks of queries start .. start + len(sim) from their rows of the similarity matrix.

    codes None: every item is its own group, so the true partner of row r is column start + r.
    That is the grouped computation with the identity as groups, without its N x rows masks.
    """
    rows = np.arange(sim.shape[0])
    if codes is None:
        best = sim[rows, start + rows][:, None]
        greater = (sim > best).sum(axis=1)
        # The partner equals itself, so it is one of the equal scores; unless it is NaN, which
        # equals nothing (the grouped computation then counts no tie either).
        tied = (sim == best).sum(axis=1) - (best[:, 0] == best[:, 0])
        return _nan_misses(greater, best, sim.shape[1]), tied, np.ones(len(rows), dtype=np.int64)
    same = codes[start:start + len(rows), None] == codes[None, :]
    if not same.any(axis=1).all():
        raise ValueError("every query needs at least one true partner among the candidates")
    best = np.where(same, sim, -np.inf).max(axis=1, keepdims=True)
    level = sim == best
    wrong = ~same
    greater = ((sim > best) & wrong).sum(axis=1)
    tied = (level & wrong).sum(axis=1)
    # A NaN best equals nothing, not even itself: counted as the one partner it is, as for exact
    # items (no tie either way).
    correct = np.maximum((level & same).sum(axis=1), 1)
    return _nan_misses(greater, best, sim.shape[1]), tied, correct


def _nan_misses(greater: np.ndarray, best: np.ndarray, candidates: int) -> np.ndarray:
    """A NaN partner score (a diverged model's embedding) ranks behind every candidate: a miss at
    every cut-off. Nothing compares greater than NaN, so it would otherwise rank first."""
    broken = np.isnan(best[:, 0])
    if broken.any():
        greater = np.where(broken, candidates, greater)
    return greater


def _blockwise_ranks(
    n: int, similarity_rows: Callable[[int, int], np.ndarray], levels: Sequence[np.ndarray | None]
) -> list[Ranks]:
    """Ranks at each level of grouping (group codes, or None for exact item) over n queries.

    `similarity_rows(start, stop)` gives rows start..stop of the similarity matrix; each block is
    asked for once and serves every level, which is where the time goes (the matrix product).
    """
    out = [(np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)) for _ in levels]
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, n)
        sim = similarity_rows(start, stop)
        for ranks, codes in zip(out, levels, strict=True):
            for column, values in zip(ranks, _ranks_block(sim, start, codes), strict=True):
                column[start:stop] = values
    return out


def _pair_without_groups(ranks: Ranks, grouped: bool) -> tuple[np.ndarray, ...]:
    # Without groups every query has exactly one true partner: (greater, tied) is its whole rank.
    return ranks if grouped else ranks[:2]


def partner_ranks(sim: np.ndarray, groups: Sequence[object] | np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """(greater, tied) per row of a square similarity matrix, and with groups (greater, tied, correct).

    Row i is a query, column j a candidate; item i's own partner is column i (and, with groups,
    every column of the same group, so several may share the best score: `correct`).
    """
    sim = np.asarray(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be a square matrix, got shape {sim.shape}")
    codes = None if groups is None else _group_codes(groups, sim.shape[0])
    (ranks,) = _blockwise_ranks(sim.shape[0], lambda start, stop: sim[start:stop], [codes])
    return _pair_without_groups(ranks, codes is not None)


def _paired(queries: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = normalize(queries)
    c = normalize(candidates)
    if q.shape != c.shape:
        raise ValueError(f"queries {q.shape} and candidates {c.shape} must be paired one to one")
    return q, c


def _embedding_ranks(queries: np.ndarray, candidates: np.ndarray, levels: Sequence[np.ndarray | None]) -> list[Ranks]:
    """`_blockwise_ranks` on the cosine similarities of normalised embeddings (never N x N at once)."""
    return _blockwise_ranks(len(queries), lambda start, stop: queries[start:stop] @ candidates.T, levels)


def partner_ranks_embeddings(
    queries: np.ndarray, candidates: np.ndarray, groups: Sequence[object] | np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """Like `partner_ranks` on cosine similarities, computed block by block (never N x N at once)."""
    q, c = _paired(queries, candidates)
    codes = None if groups is None else _group_codes(groups, q.shape[0])
    (ranks,) = _embedding_ranks(q, c, [codes])
    return _pair_without_groups(ranks, codes is not None)


def hit_rate(greater: np.ndarray, tied: np.ndarray, k: int, correct: np.ndarray | None = None) -> float:
    """Expected fraction of queries whose true partner is within the top k (random tie order).

    `correct`: how many true partners share the best score per query (None: one each).
    """
    if len(greater) == 0:
        return float("nan")
    # One correct item: the tied block holds it at each of its tied + 1 places with equal chance.
    hits = np.clip((k - greater) / (tied + 1.0), 0.0, 1.0)
    if correct is not None:
        several = np.asarray(correct) > 1
        if several.any():
            hits[several] = _hit_with_several_correct(
                np.asarray(greater)[several], np.asarray(tied)[several], np.asarray(correct)[several], k)
    return float(hits.mean())


def _hit_with_several_correct(greater: np.ndarray, tied: np.ndarray, correct: np.ndarray, k: int) -> np.ndarray:
    """1 - C(tied, m) / C(tied + correct, m), m = clip(k - greater, 0, tied + correct): the chance
    that the m places of the tied block inside the cut-off are not all taken by wrong candidates."""
    m = np.clip(k - greater, 0, tied + correct)
    some_correct_forced = m > tied  # more places than wrong candidates to fill them
    m = np.minimum(m, tied)
    log_fact = _log_factorials(int((tied + correct).max()))
    # C(t, m) / C(t + c, m) = t! (t + c - m)! / ((t - m)! (t + c)!). In logs, so large N does not
    # overflow; the difference of log-factorials costs about 1e-16 * log(N!) of absolute accuracy
    # (5e-11 at N = 30,000), far below what a metric reports.
    log_miss = (log_fact[tied] + log_fact[tied + correct - m]) - (log_fact[tied - m] + log_fact[tied + correct])
    return np.where(some_correct_forced, 1.0, -np.expm1(np.minimum(log_miss, 0.0)))


def _log_factorials(n: int) -> np.ndarray:
    """log(i!) for i = 0 .. at least n (a table shared by every call that fits in it)."""
    return _log_factorial_table(1 << max(int(n), 1).bit_length())


@lru_cache(maxsize=4)
def _log_factorial_table(size: int) -> np.ndarray:
    # lgamma per entry, not a cumulative sum of logs, whose rounding would grow with i.
    table = np.array([math.lgamma(i + 1.0) for i in range(size)])
    table.flags.writeable = False
    return table


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
    greater: np.ndarray,
    tied: np.ndarray,
    correct: np.ndarray | None = None,
    *,
    fractions_pct: Sequence[float] = DEFAULT_FRACTIONS_PCT,
) -> RetrievalCurve:
    """The curve of ranks from `partner_ranks` (`correct` None: one true partner per query)."""
    n = len(greater)
    return RetrievalCurve(
        n=n,
        top1=hit_rate(greater, tied, 1, correct),
        fractions_pct=[float(f) for f in fractions_pct],
        accuracy=[hit_rate(greater, tied, cutoff(f, n), correct) for f in fractions_pct],
    )


def retrieval_curve(
    sim: np.ndarray,
    groups: Sequence[object] | np.ndarray | None = None,
    fractions_pct: Sequence[float] = DEFAULT_FRACTIONS_PCT,
) -> RetrievalCurve:
    """Row-wise retrieval on a similarity matrix: image->text for sim[i, j] = cos(image_i, text_j)."""
    return curve_from_ranks(*partner_ranks(sim, groups), fractions_pct=fractions_pct)


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
    """Image->text and text->image curves over the whole set; proposal level when ids are given.

    One pass over the similarity blocks per direction serves both levels. Text->image takes its
    own product (texts @ images.T) rather than transposing image->text's: a product's rounding
    depends on its operand layout, and a flipped near-tie would change a rank.
    """
    images, texts = _paired(image_emb, text_emb)
    levels: list[np.ndarray | None] = [None]
    if proposal_ids is not None:
        levels.append(_group_codes(proposal_ids, images.shape[0]))
    i2t = [curve_from_ranks(*ranks, fractions_pct=fractions_pct) for ranks in _embedding_ranks(images, texts, levels)]
    t2i = [curve_from_ranks(*ranks, fractions_pct=fractions_pct) for ranks in _embedding_ranks(texts, images, levels)]
    if proposal_ids is None:
        return RetrievalResult(i2t=i2t[0], t2i=t2i[0])
    return RetrievalResult(i2t=i2t[0], t2i=t2i[0], i2t_proposal=i2t[1], t2i_proposal=t2i[1])


def inbatch_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """The in-batch metric's batches: consecutive full batches of `order` (item indices).

    A remainder smaller than a batch joins none (its chance level would differ), unless there are
    fewer items than one batch, when all of them form one.
    """
    size = min(batch_size, len(order))
    return [order[start:start + size] for start in range(0, len(order) - size + 1, size)] if size else []


def inbatch_hit_rates(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    batches: Sequence[np.ndarray],
    *,
    fraction_pct: float = 10.0,
    directions: Sequence[str] = ("i2t", "t2i"),
) -> dict[str, np.ndarray]:
    """Top-`fraction_pct`% hit rate inside each batch (index array), per direction ('i2t', 't2i').

    A batch's candidates are its own items only: top-10% of 100 is the top 10 of that batch.
    """
    for direction in directions:
        if direction not in ("i2t", "t2i"):
            raise ValueError(f"direction must be 'i2t' or 't2i', got {direction!r}")
    images, texts = _paired(image_emb, text_emb)
    rates: dict[str, list[float]] = {direction: [] for direction in directions}
    for idx in batches:
        k = cutoff(fraction_pct, len(idx))
        for direction, hits in rates.items():
            q, c = (images[idx], texts[idx]) if direction == "i2t" else (texts[idx], images[idx])
            hits.append(hit_rate(*partner_ranks(q @ c.T), k))
    return {direction: np.asarray(hits, dtype=np.float64) for direction, hits in rates.items()}


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

    Items are shuffled with `seed` (a fixed, reproducible batching) and cut into `inbatch_batches`.
    """
    n = len(image_emb)
    if n == 0:
        return float("nan")
    batches = inbatch_batches(np.random.default_rng(seed).permutation(n), batch_size)
    hits = inbatch_hit_rates(image_emb, text_emb, batches, fraction_pct=fraction_pct, directions=(direction,))
    return float(np.mean(hits[direction]))


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
