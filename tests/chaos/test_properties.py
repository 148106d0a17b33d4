"""Property-based tests (hypothesis) for the code every record passes through.

Extends, not repeats, the area tests (tests/tasks/mast/test_parsers.py, tests/tasks/dataset/
test_splits.py, tests/tasks/evaluate/test_metrics.py, tests/storage/test_tables.py):
- proposal parsers: arbitrary bytes never crash them (a record or a ParseError with a reason);
  generated catalogs round-trip field for field, whatever garbage sits between the records;
- splits, at the level of the dataset plan: no proposal on two sides, input row order is
  irrelevant, and new proposals never move or drop an example that was already planned;
- metrics: invariant to scaling each embedding, to a rotation of the embedding space and to
  renaming proposals; bounded; the two directions are each other's transpose;
- storage: write/upsert/append round trips on local disk and memory:// against a dict model,
  and a digest that depends on the rows only, never on the order commits happened in.
"""

from __future__ import annotations

import string
import uuid

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.errors import InputError
from tasks.mast.parsers import (
    ParseError,
    clean_paragraphs,
    clean_person,
    decode_lines,
    parse_apt,
    parse_catalog,
    parse_pro,
)

pytestmark = pytest.mark.chaos
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
STORAGE = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- proposal parsers ----------------------------------------------------------------------------
words = st.text(alphabet=string.ascii_letters + "éüñçøßÅ", min_size=1, max_size=10)
line_text = st.lists(words, min_size=1, max_size=6).map(" ".join)


@st.composite
def catalog_records(draw):
    ids = draw(st.lists(st.integers(1, 99_999), min_size=1, max_size=6, unique=True))
    return [{"proposal_id": str(pid), "cycle": draw(st.integers(1, 33)), "title": draw(line_text),
             "pi": draw(line_text), "category": draw(st.sampled_from(["GALAXIES", "STELLAR PHYSICS", ""])),
             "abstract": "\n\n".join(draw(st.lists(line_text, min_size=1, max_size=3)))} for pid in ids]


def render_catalog(records, garbage: list[bytes]) -> bytes:
    rule = b"-" * 80
    parts = []
    for i, r in enumerate(records):
        block = (f"\nProp. Type: GO\nCategory:   {r['category']}\nID:         {r['proposal_id']}\n"
                 f"Cycle:      {r['cycle']}\nTitle:      {r['title']}\nPI:         {r['pi']}\n\n{r['abstract']}\n")
        parts.append(block.encode("utf-8"))
        if i < len(garbage):
            parts.append(garbage[i])
    return rule + rule.join(parts)


@FAST
@given(catalog_records(), st.lists(st.binary(max_size=60).filter(lambda b: b"-" * 80 not in b), max_size=3))
def test_catalog_round_trips_every_record_whatever_lies_between(records, garbage):
    garbage = [b"\n" + g.replace(b"ID:", b"") + b"\n" for g in garbage]  # junk blocks, never a record's ID
    parsed, failures = parse_catalog(render_catalog(records, garbage))
    by_id = {p.proposal_id: p for p in parsed}
    for r in records:
        p = by_id[r["proposal_id"]]
        assert (p.cycle, p.title, p.pi, p.category) == (r["cycle"], r["title"], clean_person(r["pi"]), r["category"])
        assert p.abstract == clean_paragraphs(r["abstract"])
    assert all(isinstance(err, ParseError) and err.reason for _, err in failures)


@FAST
@given(st.binary(max_size=2000))
def test_parsers_never_crash_on_arbitrary_bytes(data):
    for parse in (parse_apt, parse_pro):
        try:
            parse(data)
        except ParseError as err:
            assert err.reason
    records, failures = parse_catalog(data)
    assert all(err.reason for _, err in failures)


@FAST
@given(st.text(max_size=300))
def test_text_decoding_is_lossless_for_utf8_and_cleaning_idempotent(text):
    assert decode_lines(text.encode("utf-8")) == text.lstrip("\ufeff") or text.startswith("\ufeff")
    assert clean_paragraphs(clean_paragraphs(text)) == clean_paragraphs(text)


@FAST
@given(st.lists(line_text, min_size=1, max_size=5), st.binary(min_size=1, max_size=8).filter(
    lambda b: not _is_utf8(b)))
def test_one_bad_line_never_garbles_the_other_lines(lines, bad):
    good = "\n".join(lines) + "\nJosé Ramírez-Núñez"
    decoded = decode_lines(good.encode("utf-8") + b"\n" + bad)
    assert decoded.startswith(good)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FAST
@given(pid=st.integers(1, 99_999), cycle=st.integers(1, 33), title=line_text, abstract=line_text)
def test_apt_fields_round_trip_through_xml_escaping(pid, cycle, title, abstract):
    from xml.sax.saxutils import escape

    title = title + " <&> \"q\""
    xml = (f'<?xml version="1.0" encoding="UTF-8"?><HSTProposal Phase2ID="{pid}">'
           f'<ProposalInformation Cycle="{cycle}" Category="GO"><Title>{escape(title)}</Title>'
           f'<Abstract>{escape(abstract)}</Abstract></ProposalInformation></HSTProposal>').encode()
    p = parse_apt(xml)
    assert (p.proposal_id, p.cycle, p.title, p.abstract) == (str(pid), cycle, " ".join(title.split()), abstract)


# -- splits, through the dataset plan -----------------------------------------------------------
@st.composite
def archive_tables(draw, min_proposals=1):
    pids = draw(st.lists(st.integers(1, 20_000), min_size=min_proposals, max_size=25, unique=True))
    proposals = [{"proposal_id": str(p), "cycle": draw(st.integers(1, 30)), "abstract": f"We study {p}."}
                 for p in pids]
    obs = []
    for p in pids:
        for _ in range(draw(st.integers(1, 5))):
            obs.append({"obsid": str(10_000_000 + len(obs) + 1000 * p), "proposal_id": str(p)})
    return proposals, obs


def _plan(proposals, obs, **params):
    from schemas.dataset import BuildDatasetParams
    from tasks.dataset.examples import plan_examples

    previews = [{"obsid": o["obsid"], "proposal_id": o["proposal_id"], "status": "ok",
                 "sha256": f"{int(o['obsid']):064x}"} for o in obs]
    tables = {"observations": pa.Table.from_pylist(obs), "previews": pa.Table.from_pylist(previews),
              "proposals": pa.Table.from_pylist(proposals), "summaries": None}
    plan = plan_examples(tables, BuildDatasetParams(require_summary=False, **params))
    return {m.obsid: (m.proposal_id, m.split) for m in plan.examples}


@FAST
@given(archive_tables(), st.randoms(use_true_random=False), st.sampled_from(["hash", "cycle"]))
def test_no_proposal_on_two_sides_and_row_order_is_irrelevant(tables, rnd, mode):
    proposals, obs = tables
    params = {"split_mode": mode, "cycle_cutoff": 20} if mode == "cycle" else {}
    planned = _plan(proposals, obs, **params)
    assert set(planned) == {o["obsid"] for o in obs}  # nothing dropped
    sides: dict[str, set[str]] = {}
    for pid, split in planned.values():
        sides.setdefault(pid, set()).add(split)
    assert all(len(s) == 1 for s in sides.values())
    shuffled_p, shuffled_o = list(proposals), list(obs)
    rnd.shuffle(shuffled_p)
    rnd.shuffle(shuffled_o)
    assert _plan(shuffled_p, shuffled_o, **params) == planned


@FAST
@given(archive_tables(), archive_tables())
def test_new_proposals_never_move_or_drop_a_planned_example(old, new):
    old_p, old_o = old
    known = {p["proposal_id"] for p in old_p}
    new_p = [p for p in new[0] if p["proposal_id"] not in known]
    new_ids = {p["proposal_id"] for p in new_p}
    new_o = [{**o, "obsid": str(int(o["obsid"]) + 7 * 10**9)} for o in new[1] if o["proposal_id"] in new_ids]
    before = _plan(old_p, old_o)
    after = _plan(old_p + new_p, old_o + new_o)
    assert {k: after[k] for k in before} == before


# -- metrics --------------------------------------------------------------------------------------
@st.composite
def embeddings(draw):
    n = draw(st.integers(3, 30))
    dim = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    images = rng.normal(size=(n, dim))
    texts = images + draw(st.floats(0.1, 2.0)) * rng.normal(size=(n, dim))
    groups = rng.integers(0, max(1, n // 3), size=n)
    return images, texts, groups, rng


def _curves(result):
    return [(c.top1, c.accuracy) for c in (result.i2t, result.t2i, result.i2t_proposal, result.t2i_proposal)]


@FAST
@given(embeddings())
def test_metrics_ignore_scale_rotation_and_proposal_names(data):
    from tasks.evaluate.metrics import evaluate_retrieval

    images, texts, groups, rng = data
    base = _curves(evaluate_retrieval(images, texts, groups))
    scaled = _curves(evaluate_retrieval(images * rng.uniform(0.1, 10, size=(len(images), 1)),
                                        texts * rng.uniform(0.1, 10, size=(len(texts), 1)), groups))
    q, _ = np.linalg.qr(rng.normal(size=(images.shape[1], images.shape[1])))
    rotated = _curves(evaluate_retrieval(images @ q, texts @ q, groups))
    renamed = _curves(evaluate_retrieval(images, texts, [f"p-{g * 7 + 3}" for g in groups]))
    for other in (scaled, rotated, renamed):
        for (t1, acc1), (t2, acc2) in zip(base, other, strict=True):
            assert t1 == pytest.approx(t2, abs=1e-9) and acc1 == pytest.approx(acc2, abs=1e-9)
    for top1, accuracy in base:
        assert 0.0 <= top1 <= 1.0 and all(0.0 <= a <= 1.0 for a in accuracy)


@FAST
@given(embeddings())
def test_the_two_directions_are_transposes(data):
    from tasks.evaluate.metrics import evaluate_retrieval, inbatch_accuracy

    images, texts, groups, _ = data
    forward, backward = evaluate_retrieval(images, texts, groups), evaluate_retrieval(texts, images, groups)
    assert forward.i2t == backward.t2i and forward.t2i == backward.i2t
    assert forward.i2t_proposal == backward.t2i_proposal
    assert inbatch_accuracy(images, texts, direction="t2i") == inbatch_accuracy(texts, images, direction="i2t")
    assert 0.0 <= inbatch_accuracy(images, texts) <= 1.0


# -- storage --------------------------------------------------------------------------------------
keys = st.text(alphabet="0123456789abcdef", min_size=1, max_size=6)
values = st.one_of(st.none(), st.integers(-2**40, 2**40), st.text(max_size=12))
batches = st.lists(st.lists(st.tuples(keys, values), max_size=12), min_size=1, max_size=5)
SCHEMA = pa.schema([("k", pa.string()), ("v", pa.string()), ("n", pa.int64())])


def _table(rows) -> pa.Table:
    return pa.Table.from_pylist([{"k": k, "v": None if v is None else str(v),
                                  "n": v if isinstance(v, int) else None} for k, v in rows], schema=SCHEMA)


@pytest.fixture(params=["local", "memory"])
def store_root(request, tmp_path_factory):
    if request.param == "local":
        return str(tmp_path_factory.mktemp("props") / "tables")
    return f"memory://hubbleclip-props-{uuid.uuid4().hex}"


@STORAGE
@given(batches)
def test_upserts_equal_a_dict_model_and_the_digest_ignores_commit_order(store_root, batch_list):
    from storage.tables import TableStore

    assume(any(batch_list))
    model: dict[str, dict] = {}
    store = TableStore(f"{store_root}/{uuid.uuid4().hex}")
    for batch in batch_list:
        if batch:
            store.upsert("t", _table(batch), key="k")
        for row in _table(batch).to_pylist():
            model[row["k"]] = row
    assert store.read("t").to_pylist() == [model[k] for k in sorted(model)]
    reordered = TableStore(f"{store_root}/{uuid.uuid4().hex}")
    for batch in reversed(batch_list):  # the same final rows, committed in another order
        kept = [(k, v) for k, v in batch if model[k] == _table([(k, v)]).to_pylist()[0]]
        if kept:
            reordered.upsert("t", _table(kept), key="k")
    assert reordered.manifest("t").digest == store.manifest("t").digest


@STORAGE
@given(batches)
def test_appends_keep_every_row_or_each_key_once(store_root, batch_list):
    from storage.tables import TableStore

    store = TableStore(f"{store_root}/{uuid.uuid4().hex}")
    unique = TableStore(f"{store_root}/{uuid.uuid4().hex}")
    all_rows, first, seen = [], {}, set()
    for batch in batch_list:
        rows = _table(batch)
        store.append("log", rows)
        unique.append("log", rows, unique_on=["k"])
        if tuple(batch) not in seen:  # an identical batch is one file: a replayed append adds nothing
            all_rows += rows.to_pylist()
        seen.add(tuple(batch))
        for row in rows.to_pylist():
            first.setdefault(row["k"], row)
    assert store.read("log").to_pylist() == all_rows
    assert sorted(unique.read("log").to_pylist(), key=lambda r: r["k"]) == [first[k] for k in sorted(first)]


@STORAGE
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_image_store_round_trips_and_refuses_non_keys(store_root, blobs):
    import hashlib

    from storage.images import ImageStore

    store = ImageStore(f"{store_root}/{uuid.uuid4().hex}")
    keys_ = [store.put(b) for b in blobs]
    assert keys_ == [hashlib.sha256(b).hexdigest() for b in blobs]
    assert all(store.get(k) == b for k, b in zip(keys_, blobs, strict=True))
    assert store.keys() == sorted(set(keys_))
    for bad in ("../" + "0" * 61, keys_[0].upper() if keys_ else "X" * 64, "0" * 63):
        with pytest.raises(InputError):
            store.path(bad)
