from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.evaluate import metrics
from tasks.train.retrieval import in_batch_topk_accuracy


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
    greater, tied = metrics.partner_ranks(sim.numpy())
    k = metrics.cutoff(10, 100)
    assert metrics.hit_rate(greater[:1], tied[:1], k) == 1.0 and metrics.hit_rate(greater[1:2], tied[1:2], k) == 0.0


def test_remainders_are_dropped_and_small_sets_are_one_batch():
    x = torch.randn(250, 8)
    assert in_batch_topk_accuracy(x, x)["pairs"] == 200
    assert in_batch_topk_accuracy(x[:30], x[:30])["pairs"] == 30
    with pytest.raises(ValueError):
        in_batch_topk_accuracy(x[:10], x[:9])


def test_agrees_with_the_evaluation_metrics_module():
    torch.manual_seed(1)
    img, txt = torch.randn(100, 16), torch.randn(100, 16)
    txt[:50] = img[:50] + 0.3 * txt[:50]
    ours = in_batch_topk_accuracy(img, txt)["image_to_text"]
    greater, tied = metrics.partner_ranks_embeddings(img.numpy(), txt.numpy())
    assert ours == pytest.approx(metrics.hit_rate(greater, tied, metrics.cutoff(10, 100)), abs=1e-6)


def test_batches_follow_the_validation_order_and_match_the_evaluation_in_batch_metric():
    # Consecutive batches, not shuffled ones: the first 100 pairs are perfect, the next 100 random.
    torch.manual_seed(2)
    img = torch.randn(200, 16)
    txt = torch.cat([img[:100], torch.randn(100, 16)])
    ours = in_batch_topk_accuracy(img, txt)
    hits = metrics.inbatch_hit_rates(img.numpy(), txt.numpy(), metrics.inbatch_batches(np.arange(200), 100))
    assert hits["i2t"][0] == 1.0 and hits["t2i"][0] == 1.0 and hits["i2t"][1] < 0.5
    assert ours["image_to_text"] == float(hits["i2t"].mean())
    assert ours["text_to_image"] == float(hits["t2i"].mean())
