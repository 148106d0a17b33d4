"""The embedding index: float16 Parquet round trip, exact search, model identity, search/describe."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from schemas.errors import InputError
from storage import DataLayout, TableStore
from tasks.evaluate import index as idx
from tasks.evaluate.search import clean_query, open_searcher, read_image_file

SHA = "a" * 64
OTHER = "b" * 64


def _metadata(n: int) -> dict[str, list[str]]:
    return {
        "obsid": [str(1000 + i) for i in range(n)],
        "proposal_id": [str(10 + i // 3) for i in range(n)],
        "title": [f"Proposal <b>{10 + i // 3}</b>" for i in range(n)],
        "preview_sha256": [f"{i:064x}" for i in range(n)],
    }


def test_index_round_trips_as_float16_parquet_with_its_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 16)).astype(np.float32)
    manifest = idx.write_index(str(tmp_path), dataset_version="v1", checkpoint_sha256=SHA, embeddings=emb,
                               metadata=_metadata(30), model_name="tiny", run="r1")
    assert manifest.config["checkpoint_sha256"] == SHA and manifest.rows == 30
    name = idx.index_name("v1", SHA)
    part = tmp_path / "index" / name / manifest.files[0].path
    schema = pq.read_schema(part)
    assert str(schema.field("embedding").type) == "fixed_size_list<element: halffloat>[16]"
    assert "obsid" in schema.names
    loaded = idx.open_index(str(tmp_path))
    assert loaded.name == name and len(loaded) == 30 and loaded.run == "r1"
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.embeddings, unit, atol=2e-3)
    assert idx.list_indexes(str(tmp_path)) == [name]


def test_exact_search_matches_brute_force_and_carries_metadata(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(200, 8))
    idx.write_index(str(tmp_path), dataset_version="v1", checkpoint_sha256=SHA, embeddings=emb,
                    metadata=_metadata(200))
    loaded = idx.open_index(str(tmp_path))
    q = rng.normal(size=8)
    hits = loaded.search(q, 7, checkpoint_sha256=SHA)
    brute = np.argsort(-(loaded.embeddings @ (q / np.linalg.norm(q))))[:7]
    assert [h.obsid for h in hits] == [str(1000 + i) for i in brute]
    assert [h.rank for h in hits] == list(range(1, 8))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    first = hits[0]
    assert first.title == f"Proposal <b>{first.proposal_id}</b>"
    assert first.preview_path.endswith(f"images/{first.preview_sha256[:2]}/{first.preview_sha256}.jpg")
    assert len(loaded.search(q, 10_000, checkpoint_sha256=SHA)) == 200


def test_a_query_from_another_model_is_refused(tmp_path):
    idx.write_index(str(tmp_path), dataset_version="v1", checkpoint_sha256=SHA,
                    embeddings=np.eye(4), metadata=_metadata(4))
    loaded = idx.open_index(str(tmp_path))
    with pytest.raises(InputError, match="never mixed"):
        loaded.search(np.ones(4), 2, checkpoint_sha256=OTHER)
    with pytest.raises(InputError, match="dimensions"):
        loaded.search(np.ones(5), 2, checkpoint_sha256=SHA)


def test_missing_or_bad_indexes_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="run `hubbleclip evaluate` first"):
        idx.open_index(str(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        idx.open_index(str(tmp_path), "nope")
    with pytest.raises(InputError):
        idx.open_index(str(tmp_path), "../etc")
    TableStore(DataLayout(str(tmp_path)).index).write("other", idx.pa.table({"x": [1]}))
    with pytest.raises(InputError, match="not an embedding index"):
        idx.open_index(str(tmp_path), "other")


def test_query_cleaning():
    assert clean_query("  globular\n cluster ") == "globular cluster"
    for bad in ("", "   \t"):
        with pytest.raises(InputError, match="empty query"):
            clean_query(bad)
    with pytest.raises(InputError, match="too long"):
        clean_query("x" * 1000)


def test_search_and_describe_with_a_real_model(indexed_searcher, jpegs):
    searcher = indexed_searcher
    hits = searcher.search("globular cluster", k=5)
    assert len(hits) == 5 and all(-1.0 <= h.score <= 1.0 for h in hits)
    assert all(searcher.index.has_preview(h.preview_sha256) for h in hits)
    with pytest.raises(InputError, match="k must be between"):
        searcher.search("dust", k=0)
    ranking = searcher.describe(jpegs[3], k=5)
    assert len(ranking.classes) == 5 and len(set(ranking.classes)) == 5
    assert ranking.scores == sorted(ranking.scores, reverse=True)
    with pytest.raises(InputError, match="not a decodable image"):
        searcher.describe(b"\x89PNG broken")


def test_open_searcher_loads_the_model_of_the_indexing_run(indexed_searcher, tiny_clip):
    calls = []

    def load(data, run, device):
        calls.append(run)
        return tiny_clip

    data = indexed_searcher.index.images_root.rsplit("/images", 1)[0]
    opened = open_searcher(data, load)
    assert calls == ["r1"] and len(opened.search("dust", 3)) == 3


def test_image_files_are_checked_before_reading(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_image_file(str(tmp_path / "missing.jpg"))
    with pytest.raises(InputError, match="folder"):
        read_image_file(str(tmp_path))
