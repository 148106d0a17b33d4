from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.dataset.sampler import ProposalBatcher, Row, shuffle_rows


def _rows(proposals):
    return [Row(str(i), str(p), "s", "a", b"") for i, p in enumerate(proposals)]


@settings(max_examples=80, deadline=None)
@given(proposals=st.lists(st.integers(0, 12), max_size=120), batch_size=st.integers(1, 9))
def test_every_row_is_batched_once_and_proposals_are_unique_while_possible(proposals, batch_size):
    rows = _rows(proposals)
    batcher = ProposalBatcher(batch_size, one_per_proposal=True)
    batches = list(batcher.batches(rows))
    assert Counter(r.obsid for b in batches for r in b) == Counter(r.obsid for r in rows)
    assert all(len(b) == batch_size for b in batches[:-1])
    duplicates = sum(len(b) - len({r.proposal_id for r in b}) for b in batches)
    assert duplicates <= batcher.relaxed
    if len(set(proposals)) >= batch_size * 6 and max(Counter(proposals).values()) <= 2:
        assert batcher.relaxed == 0  # plenty of proposals: never relaxed


def test_constraint_off_keeps_stream_order_and_drop_last():
    rows = _rows([1, 1, 1, 2, 2])
    batches = list(ProposalBatcher(2, one_per_proposal=False).batches(rows, drop_last=True))
    assert [[r.obsid for r in b] for b in batches] == [["0", "1"], ["2", "3"]]


def test_constrained_batches_defer_siblings():
    batches = list(ProposalBatcher(3).batches(_rows([1, 1, 2, 3, 1, 4, 5])))
    assert [[r.proposal_id for r in b] for b in batches] == [["1", "2", "3"], ["1", "4", "5"], ["1"]]


def test_shuffle_buffer_is_a_seeded_permutation():
    rows = _rows(range(100))
    a = [r.obsid for r in shuffle_rows(rows, 16, np.random.default_rng(1))]
    b = [r.obsid for r in shuffle_rows(rows, 16, np.random.default_rng(1))]
    assert a == b and sorted(a) == sorted(r.obsid for r in rows) and a != [r.obsid for r in rows]
    assert [r.obsid for r in shuffle_rows(rows, 0, np.random.default_rng(1))] == [r.obsid for r in rows]
