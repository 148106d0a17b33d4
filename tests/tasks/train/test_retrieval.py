from __future__ import annotations

import pytest
import torch

from tasks.train.retrieval import in_batch_topk_accuracy, topk_hit_rate


def test_perfect_pairs_score_one_and_random_pairs_score_chance():
    torch.manual_seed(0)
    x = torch.randn(1000, 32)
    assert in_batch_topk_accuracy(x, x)["image_to_text"] == 1.0
    random = in_batch_topk_accuracy(x, torch.randn(1000, 32))
    assert random["pairs"] == 1000
    assert 0.05 < random["image_to_text"] < 0.15 and 0.05 < random["text_to_image"] < 0.15


def test_ties_count_as_the_expected_hit():
    # A constant embedding ties everything: exactly chance (10 of 100), not 0 or 1.
    ones = torch.ones(100, 8)
    assert in_batch_topk_accuracy(ones, ones)["image_to_text"] == pytest.approx(0.10)


def test_rank_cut_off_is_ten_of_a_hundred():
    sim = torch.zeros(100, 100)
    sim[0, 1:10] = 1.0  # nine wrong candidates above the partner: still in the top 10
    sim[1, 2:12] = 1.0  # ten above: out
    sim += torch.eye(100) * 0.5
    hits = topk_hit_rate(sim, 0.10)
    assert hits[0] == 1.0 and hits[1] == 0.0


def test_remainders_are_dropped_and_small_sets_are_one_batch():
    x = torch.randn(250, 8)
    assert in_batch_topk_accuracy(x, x)["pairs"] == 200
    assert in_batch_topk_accuracy(x[:30], x[:30])["pairs"] == 30
    with pytest.raises(ValueError):
        in_batch_topk_accuracy(x[:10], x[:9])


def test_agrees_with_the_evaluation_metrics_module():
    metrics = pytest.importorskip("tasks.evaluate.metrics")
    torch.manual_seed(1)
    img, txt = torch.randn(100, 16), torch.randn(100, 16)
    txt[:50] = img[:50] + 0.3 * txt[:50]
    ours = in_batch_topk_accuracy(img, txt)["image_to_text"]
    greater, tied = metrics.partner_ranks_embeddings(img.numpy(), txt.numpy())
    assert ours == pytest.approx(metrics.hit_rate(greater, tied, metrics.cutoff(10, 100)), abs=1e-6)
