"""Property tests for the retrieval metrics (the paper's top-k%, exact item and proposal level)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.evaluate import metrics

FAST = settings(max_examples=40, deadline=None)


@st.composite
def paired_embeddings(draw, min_n: int = 2, max_n: int = 40):
    n = draw(st.integers(min_n, max_n))
    dim = draw(st.integers(2, 16))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, dim)).astype(np.float32)
    noise = draw(st.floats(0.0, 3.0))
    texts = images + noise * rng.normal(size=(n, dim)).astype(np.float32)
    groups = rng.integers(0, max(1, n // 3), size=n)
    return images, texts, groups


@FAST
@given(paired_embeddings())
def test_accuracies_are_probabilities_and_monotone_in_fraction(data):
    images, texts, groups = data
    result = metrics.evaluate_retrieval(images, texts, groups)
    for curve in (result.i2t, result.t2i, result.i2t_proposal, result.t2i_proposal):
        acc = np.asarray(curve.accuracy)
        assert np.all((acc >= 0) & (acc <= 1))
        assert np.all(np.diff(acc) >= -1e-12)
        assert 0 <= curve.top1 <= acc[0] + 1e-12
        assert curve.accuracy[-1] == pytest.approx(1.0)  # 100% of candidates always holds the partner


@FAST
@given(paired_embeddings())
def test_proposal_level_never_below_exact_item(data):
    images, texts, groups = data
    result = metrics.evaluate_retrieval(images, texts, groups)
    assert np.all(np.asarray(result.i2t_proposal.accuracy) >= np.asarray(result.i2t.accuracy) - 1e-12)
    assert np.all(np.asarray(result.t2i_proposal.accuracy) >= np.asarray(result.t2i.accuracy) - 1e-12)


@FAST
@given(paired_embeddings(), st.integers(0, 2**31 - 1))
def test_invariant_to_a_permutation_of_the_items(data, seed):
    # On the similarity matrix itself: recomputing dot products in another order could round a
    # near-tie differently, which is float arithmetic, not the metric.
    images, texts, groups = data
    sim = metrics.normalize(images) @ metrics.normalize(texts).T
    perm = np.random.default_rng(seed).permutation(len(images))
    permuted = sim[perm][:, perm]
    for g, pg in ((None, None), (groups, groups[perm])):
        _same_curve(metrics.retrieval_curve(sim, g), metrics.retrieval_curve(permuted, pg))
        _same_curve(metrics.retrieval_curve(sim.T, g), metrics.retrieval_curve(permuted.T, pg))


def _same_curve(a: metrics.RetrievalCurve, b: metrics.RetrievalCurve) -> None:
    # Means over the same values in another order may differ in the last bit.
    assert a.n == b.n and a.top1 == pytest.approx(b.top1, abs=1e-12)
    np.testing.assert_allclose(a.accuracy, b.accuracy, atol=1e-12)


@FAST
@given(st.integers(2, 60), st.integers(8, 32), st.integers(0, 2**31 - 1))
def test_perfect_embeddings_score_one(n, dim, seed):
    # dim >= 8: in 2-d, two random directions can agree to float32 precision and tie genuinely.
    images = np.random.default_rng(seed).normal(size=(n, dim))
    result = metrics.evaluate_retrieval(images, images.copy(), np.arange(n))
    assert result.i2t.top1 == pytest.approx(1.0)
    assert result.t2i.top1 == pytest.approx(1.0)
    assert np.allclose(result.i2t.accuracy, 1.0) and np.allclose(result.t2i_proposal.accuracy, 1.0)
    assert metrics.inbatch_accuracy(images, images, batch_size=10) == pytest.approx(1.0)


def test_random_embeddings_score_about_the_fraction():
    rng = np.random.default_rng(7)
    n = 2000
    result = metrics.evaluate_retrieval(rng.normal(size=(n, 64)), rng.normal(size=(n, 64)))
    for fraction in (10.0, 20.0, 50.0):
        assert result.i2t.at(fraction) == pytest.approx(fraction / 100, abs=0.03)
        assert result.t2i.at(fraction) == pytest.approx(fraction / 100, abs=0.03)
    inbatch = metrics.inbatch_accuracy(rng.normal(size=(n, 64)), rng.normal(size=(n, 64)))
    assert inbatch == pytest.approx(0.10, abs=0.03)


@FAST
@given(st.integers(2, 30), st.integers(0, 2**31 - 1))
def test_symmetric_similarity_gives_the_same_curve_both_ways(n, seed):
    a = np.random.default_rng(seed).normal(size=(n, n))
    sim = np.round(a + a.T, 1)  # rounding makes ties, which must be handled symmetrically too
    groups = np.random.default_rng(seed + 1).integers(0, 3, size=n)
    for g in (None, groups):
        _same_curve(metrics.retrieval_curve(sim, g), metrics.retrieval_curve(sim.T, g))


def test_ties_from_shared_captions_are_counted_as_a_random_order():
    # Two images of one proposal share one caption: the text side cannot tell them apart.
    images = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    result = metrics.evaluate_retrieval(images, texts, ["a", "a", "b"])
    # Image 0 and image 1 each see their caption tied with the other's identical one.
    greater, tied = metrics.partner_ranks_embeddings(images, texts)
    assert list(greater) == [0, 0, 0] and list(tied) == [1, 1, 0]
    assert result.i2t.top1 == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert result.i2t_proposal.top1 == pytest.approx(1.0)


def test_cutoff_follows_the_paper_floor_with_a_floor_of_one():
    assert metrics.cutoff(10, 100) == 10
    assert metrics.cutoff(10, 3000) == 300
    assert metrics.cutoff(10, 109) == 10
    assert metrics.cutoff(10, 5) == 1
    assert metrics.chance_accuracy(10, 3000) == pytest.approx(0.1)


def test_histogram_separates_true_from_shuffled_pairs():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(500, 32))
    texts = images + 0.3 * rng.normal(size=(500, 32))
    hist = metrics.similarity_histogram(images, texts, bins=40)
    assert sum(hist.true_counts) == sum(hist.shuffled_counts) == 500
    assert len(hist.edges) == 41
    assert hist.true_mean > 0.8 and abs(hist.shuffled_mean) < 0.1


@FAST
@given(st.integers(2, 200), st.integers(0, 1000))
def test_derangement_has_no_fixed_point(n, seed):
    perm = metrics.derangement(n, seed)
    assert sorted(perm) == list(range(n))
    assert not np.any(perm == np.arange(n))


def test_blockwise_ranks_match_the_full_matrix(monkeypatch):
    rng = np.random.default_rng(0)
    images, texts = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    groups = rng.integers(0, 10, size=50)
    full = metrics.partner_ranks(metrics.normalize(images) @ metrics.normalize(texts).T, groups)
    monkeypatch.setattr(metrics, "_BLOCK_ROWS", 7)
    blocked = metrics.partner_ranks_embeddings(images, texts, groups)
    assert np.array_equal(full[0], blocked[0]) and np.array_equal(full[1], blocked[1])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        metrics.partner_ranks(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        metrics.evaluate_retrieval(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        metrics.partner_ranks(np.zeros((3, 3)), groups=[1, 2])


def _expected_hit(greater: int, tied: int, correct: int, k: int) -> float:
    """Exact integer math: the tied block (tied wrong + `correct` true candidates, in random order)
    starts at rank greater + 1; the query misses only if its first m places inside k are all wrong."""
    m = min(max(k - greater, 0), tied + correct)
    return float(1 - Fraction(math.comb(tied, m), math.comb(tied + correct, m)))


def _reference_curve(sim: np.ndarray, groups: np.ndarray, fractions: list[int]) -> tuple[list[float], float]:
    """The definition, query by query: best true partner, wrong candidates above and level with it,
    true partners level with it."""
    n = len(sim)
    ranks = []
    for i in range(n):
        best = max(sim[i, j] for j in range(n) if groups[j] == groups[i])
        wrong = [sim[i, j] for j in range(n) if groups[j] != groups[i]]
        correct = sum(sim[i, j] == best for j in range(n) if groups[j] == groups[i])
        ranks.append((sum(s > best for s in wrong), sum(s == best for s in wrong), correct))

    def rate(k: int) -> float:
        return sum(_expected_hit(g, t, c, k) for g, t, c in ranks) / n

    return [rate(max(1, f * n // 100)) for f in fractions], rate(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_evaluate_retrieval_matches_a_query_by_query_reference(seed, monkeypatch):
    # Rows of four +-1 entries have norm 2, so every cosine is a multiple of 1/4, exact in any
    # summation order: ties are plentiful and the same whatever the matrix product's blocking.
    monkeypatch.setattr(metrics, "_BLOCK_ROWS", 7)  # several blocks, a ragged last one
    rng = np.random.default_rng(seed)
    n, dim = 45, 8

    def rows():
        out = np.zeros((n, dim), dtype=np.float32)
        for row in out:
            row[rng.choice(dim, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
        return out

    images, texts = rows(), rows()
    texts[1::3] = texts[::3][: len(texts[1::3])]  # shared captions
    groups = rng.integers(0, 12, size=n)
    fractions = [1, 5, 10, 25, 50, 100]
    result = metrics.evaluate_retrieval(images, texts, groups, [float(f) for f in fractions])
    i2t = metrics.normalize(images) @ metrics.normalize(texts).T
    for curve, sim, g in ((result.i2t, i2t, np.arange(n)), (result.t2i, i2t.T, np.arange(n)),
                          (result.i2t_proposal, i2t, groups), (result.t2i_proposal, i2t.T, groups)):
        accuracy, top1 = _reference_curve(sim, g, fractions)
        assert curve.n == n and curve.fractions_pct == [float(f) for f in fractions]
        assert curve.top1 == pytest.approx(top1, abs=1e-12)
        np.testing.assert_allclose(curve.accuracy, accuracy, rtol=0, atol=1e-12)


@pytest.mark.parametrize("block_rows", [7, 1024])
def test_one_pass_per_direction_gives_the_numbers_of_one_pass_per_level(block_rows, monkeypatch):
    # Exact item is the grouped computation with every item its own group, done separately.
    monkeypatch.setattr(metrics, "_BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(11)
    n = 60
    images = rng.normal(size=(n, 16)).astype(np.float32)
    texts = (images + rng.normal(size=(n, 16))).astype(np.float32)
    texts[1::2] = texts[::2]  # shared captions: exact ties
    images[5] = 0.0  # a zero embedding ties with everything
    groups = rng.integers(0, 20, size=n)
    result = metrics.evaluate_retrieval(images, texts, groups)

    def separate(queries, candidates, g):
        return metrics.curve_from_ranks(*metrics.partner_ranks_embeddings(queries, candidates, g))

    assert result.i2t == separate(images, texts, np.arange(n))
    assert result.t2i == separate(texts, images, np.arange(n))
    assert result.i2t_proposal == separate(images, texts, groups)
    assert result.t2i_proposal == separate(texts, images, groups)
    assert metrics.evaluate_retrieval(images, texts).to_dict() == {"i2t": result.i2t.to_dict(),
                                                                   "t2i": result.t2i.to_dict()}


def test_exact_item_ranks_without_groups_equal_the_identity_grouping():
    rng = np.random.default_rng(12)
    sim = np.round(rng.normal(size=(30, 30)), 1)  # rounded: ties
    sim[3, :] = np.nan  # a broken query: no hit, no tie, either way
    greater, tied, correct = metrics.partner_ranks(sim, np.arange(30))
    assert all(np.array_equal(a, b) for a, b in zip(metrics.partner_ranks(sim), (greater, tied), strict=True))
    assert np.all(correct == 1)  # one true partner each, the NaN query's included


def test_inbatch_batches_are_full_batches_of_the_order_or_one_small_batch():
    order = np.arange(250)[::-1]
    batches = metrics.inbatch_batches(order, 100)
    assert [list(b) for b in batches] == [list(order[:100]), list(order[100:200])]
    assert [list(b) for b in metrics.inbatch_batches(np.arange(30), 100)] == [list(range(30))]
    assert metrics.inbatch_batches(np.arange(0), 100) == []


def test_several_true_partners_tied_with_wrong_ones_count_as_a_random_order():
    # Proposals A and B, three images each, one caption shared by both (a resubmission): for an
    # image, all six captions tie, three of them its proposal's. Its first pick is right half the time.
    images = np.random.default_rng(0).normal(size=(6, 8))
    texts = np.ones((6, 8))
    result = metrics.evaluate_retrieval(images, texts, ["A"] * 3 + ["B"] * 3, [16.0, 50.0])
    assert result.i2t_proposal.top1 == pytest.approx(0.5, abs=1e-12)
    assert result.i2t_proposal.at(50.0) == pytest.approx(1 - 1 / 20, abs=1e-12)  # 3 picks, all wrong: 1 in C(6, 3)
    assert result.i2t.top1 == pytest.approx(1 / 6, abs=1e-12)  # exact item: one right caption among six
    assert metrics.partner_ranks(images @ texts.T, ["A"] * 3 + ["B"] * 3)[2].tolist() == [3] * 6


def _simulated_block_hit(greater: int, tied: int, correct: int, k: int, rng, trials: int = 20000) -> float:
    """Monte Carlo: shuffle the tied block, count a hit when a true partner lands inside the cut-off."""
    block = np.r_[np.zeros(tied, dtype=bool), np.ones(correct, dtype=bool)]
    places = max(0, min(k - greater, len(block)))
    orders = rng.permuted(np.tile(block, (trials, 1)), axis=1)
    return float(orders[:, :places].any(axis=1).mean())


@pytest.mark.parametrize(("greater", "tied", "correct", "k"), [
    (0, 3, 3, 1), (0, 3, 3, 2), (1, 4, 2, 3), (2, 5, 3, 4), (0, 6, 1, 3), (3, 2, 1, 4), (0, 0, 4, 1),
    (5, 3, 2, 5), (0, 7, 5, 6), (1, 2, 4, 5),
])
def test_tie_expectation_matches_a_monte_carlo_of_the_tied_block(greater, tied, correct, k):
    simulated = _simulated_block_hit(greater, tied, correct, k, np.random.default_rng(greater * 100 + tied * 10 + k))
    ours = metrics.hit_rate(np.array([greater]), np.array([tied]), k, np.array([correct]))
    assert ours == pytest.approx(_expected_hit(greater, tied, correct, k), abs=1e-12)
    assert ours == pytest.approx(simulated, abs=0.015)  # 20,000 trials: a standard error below 0.004


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curves_on_a_tied_matrix_match_a_monte_carlo_of_random_tie_orders(seed):
    # Scores in {0, 1, 2}: ties everywhere, between wrong and true partners alike.
    rng = np.random.default_rng(seed)
    n, trials = 9, 3000
    sim = rng.integers(0, 3, size=(n, n)).astype(np.float64)
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    same = groups[:, None] == groups[None, :]
    hits = np.zeros(n)  # per cut-off k = 1 .. n
    for _ in range(trials):
        order = np.lexsort((rng.random((n, n)), -sim), axis=1)  # by score, ties in random order
        hits += np.cumsum(same[np.arange(n)[:, None], order], axis=1).astype(bool).mean(axis=0)
    greater, tied, correct = metrics.partner_ranks(sim, groups)
    ours = np.array([metrics.hit_rate(greater, tied, k, correct) for k in range(1, n + 1)])
    np.testing.assert_allclose(ours, hits / trials, atol=0.02)  # 27,000 query draws per cut-off
    exact_item = [metrics.hit_rate(*metrics.partner_ranks(sim), k) for k in range(1, n + 1)]
    identity = np.arange(n)
    hits[:] = 0
    for _ in range(trials):
        order = np.lexsort((rng.random((n, n)), -sim), axis=1)
        hits += np.cumsum(order == identity[:, None], axis=1).astype(bool).mean(axis=0)
    np.testing.assert_allclose(exact_item, hits / trials, atol=0.02)


def test_one_true_partner_keeps_the_single_item_formula_bit_for_bit():
    rng = np.random.default_rng(5)
    n = 80
    images = rng.normal(size=(n, 16)).astype(np.float32)
    texts = (images + rng.normal(size=(n, 16))).astype(np.float32)
    texts[1::2] = texts[::2]  # shared captions: exact ties
    images[7] = np.nan  # a broken embedding: a miss at every cut-off
    groups = rng.integers(0, 20, size=n)
    result = metrics.evaluate_retrieval(images, texts, groups)
    for curve, (queries, candidates) in ((result.i2t, (images, texts)), (result.t2i, (texts, images))):
        greater, tied = metrics.partner_ranks_embeddings(queries, candidates)
        single = [float(np.clip((k - greater) / (tied + 1.0), 0.0, 1.0).mean())
                  for k in [1] + [metrics.cutoff(f, n) for f in curve.fractions_pct]]
        assert [curve.top1, *curve.accuracy] == single  # equal, not approximately
        for k in (1, 5, 40):
            assert metrics.hit_rate(greater, tied, k, np.ones(n, dtype=np.int64)) == metrics.hit_rate(greater, tied, k)
    greater, tied, correct = metrics.partner_ranks_embeddings(images, texts, groups)
    assert (greater[7], tied[7], correct[7]) == (n, 0, 1)  # behind every candidate
    assert metrics.hit_rate(greater[7:8], tied[7:8], n, correct[7:8]) == 0.0


def test_a_diverged_models_nan_embeddings_score_nothing():
    nan = np.full((6, 4), np.nan, dtype=np.float32)
    result = metrics.evaluate_retrieval(nan, nan, ["a", "a", "b", "b", "c", "c"])
    assert result.i2t.top1 == result.t2i.top1 == result.i2t_proposal.top1 == 0.0
    assert max(result.i2t.accuracy) == 0.0
    assert metrics.inbatch_accuracy(nan, nan, batch_size=6) == 0.0


@pytest.mark.parametrize(("greater", "tied", "correct", "k"), [
    (100, 25000, 7, 101), (100, 25000, 7, 3000), (0, 30000, 20, 300), (0, 30000, 20, 29990),
    (10, 12, 20000, 11), (0, 15000, 15000, 2),
])
def test_tie_expectation_stays_accurate_for_large_blocks(greater, tied, correct, k):
    # Log-factorials of numbers near N differ in their last bits: about 1e-16 * log(N!), i.e.
    # 5e-11 at N = 30,000, far below anything a report shows.
    ours = metrics.hit_rate(np.array([greater]), np.array([tied]), k, np.array([correct]))
    assert ours == pytest.approx(_expected_hit(greater, tied, correct, k), abs=1e-9)
