import json

import pyarrow as pa
import pytest

from schemas.errors import InputError
from schemas.manifest import Manifest
from storage import DataLayout, ImageStore, TableStore
from storage.fs import atomic_write_bytes, open_fs


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "data")
    import uuid

    return f"memory://hubbleclip-{uuid.uuid4().hex}"


def _obs(ids, cycle=20):
    return pa.table({"obsid": [str(i) for i in ids], "cycle": [cycle] * len(ids), "v": [f"v{i}" for i in ids]})


def test_write_read_round_trip(root):
    store = TableStore(DataLayout(root).tables)
    m = store.write("observations", _obs([1, 2, 3]), config={"a": 1})
    assert m.rows == 3
    back = store.read("observations")
    assert back.to_pylist() == _obs([1, 2, 3]).to_pylist()
    reread = store.manifest("observations")
    assert reread.digest == m.digest and reread.config == {"a": 1}


def test_a_named_version_reads_its_own_rows_after_a_newer_commit(root):
    store = TableStore(DataLayout(root).tables)
    first = store.write("observations", _obs([1, 2])).digest
    store.upsert("observations", _obs([3]), key=["obsid"])
    assert store.read("observations").num_rows == 3
    assert store.read("observations", digest=first).to_pylist() == _obs([1, 2]).to_pylist()
    assert store.manifest("observations", first).digest == first
    with pytest.raises(InputError, match="no version 0000"):
        store.read("observations", digest="0" * 64)


def test_an_upsert_that_moves_a_row_to_another_partition_leaves_no_copy_behind(root):
    store = TableStore(DataLayout(root).tables)
    store.upsert("proposals", _obs([1, 2], cycle=20), key="obsid", partition_by="cycle")
    store.upsert("proposals", _obs([5], cycle=22), key="obsid", partition_by="cycle")
    store.upsert("proposals", _obs([2], cycle=21), key="obsid", partition_by="cycle")  # 2's cycle corrected
    rows = sorted((r["obsid"], r["cycle"]) for r in store.read("proposals").to_pylist())
    assert rows == [("1", 20), ("2", 21), ("5", 22)]
    store.upsert("proposals", _obs([1], cycle=21), key="obsid", partition_by="cycle")  # a partition empties
    assert sorted((r["obsid"], r["cycle"]) for r in store.read("proposals").to_pylist()) == [
        ("1", 21), ("2", 21), ("5", 22)]
    assert all("cycle=20" not in f.path for f in store.manifest("proposals").files)
    # A row moving out of a partition that gets new rows in the same upsert leaves it too.
    moved_and_new = pa.concat_tables([_obs([5], cycle=21), _obs([9], cycle=22)])
    store.upsert("proposals", moved_and_new, key="obsid", partition_by="cycle")
    assert sorted((r["obsid"], r["cycle"]) for r in store.read("proposals").to_pylist()) == [
        ("1", 21), ("2", 21), ("5", 21), ("9", 22)]


def test_an_older_version_whose_files_were_collected_is_an_error_naming_the_table(root):
    from storage.gc import collect_garbage

    store = TableStore(DataLayout(root).tables)
    first = store.write("observations", _obs([1, 2])).digest
    store.write("observations", _obs([3]))
    collect_garbage(root)
    with pytest.raises(InputError, match="'observations'.*missing"):
        store.read("observations", digest=first)


def test_an_unreadable_manifest_is_an_error_naming_its_path(root):
    store = TableStore(DataLayout(root).tables)
    store.write("observations", _obs([1]))
    path = store.manifest_path("observations")
    fs, local = open_fs(path)
    fs.pipe_file(local, fs.cat_file(local)[:40])  # cut short
    with pytest.raises(InputError, match="manifest .*_manifest.json is unreadable"):
        store.read("observations")


def test_digest_is_content_addressed(root):
    store = TableStore(DataLayout(root).tables)
    d1 = store.write("t", _obs([1, 2])).digest
    d2 = store.write("t", _obs([1, 2])).digest
    d3 = store.write("t", _obs([1, 2, 3])).digest
    assert d1 == d2 != d3


def test_upsert_dedupes_on_key_and_rewrites_only_touched_partitions(root):
    store = TableStore(DataLayout(root).tables)
    store.write("obs", pa.concat_tables([_obs([1, 2], 20), _obs([7], 21)]), partition_by="cycle")
    before = {f.partition: f.path for f in store.manifest("obs").files}
    update = pa.table({"obsid": ["2", "3"], "cycle": [20, 20], "v": ["new2", "v3"]})
    m = store.upsert("obs", update, key="obsid", partition_by="cycle")
    rows = {r["obsid"]: r["v"] for r in store.read("obs").to_pylist()}
    assert rows == {"1": "v1", "2": "new2", "3": "v3", "7": "v7"}
    after = {f.partition: f.path for f in m.files}
    assert after["cycle=21"] == before["cycle=21"]
    assert after["cycle=20"] != before["cycle=20"]


def test_append_keeps_all_rows(root):
    store = TableStore(DataLayout(root).tables)
    store.append("quarantine", _obs([1]))
    store.append("quarantine", _obs([2]))
    assert store.read("quarantine").num_rows == 2


def test_interrupted_write_leaves_previous_version_visible(root, monkeypatch):
    store = TableStore(DataLayout(root).tables)
    store.write("t", _obs([1, 2]))
    import storage.tables as tables

    real = tables.atomic_write_text

    def crash(url, text):  # the data file lands, then the process "dies" before the commit
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(tables, "atomic_write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write("t", _obs([1, 2, 3, 4, 5]))
    monkeypatch.setattr(tables, "atomic_write_text", real)
    assert store.read("t").num_rows == 2  # the orphan file is not listed, so invisible
    assert store.gc("t") == 1
    assert store.read("t").num_rows == 2


def test_tampered_manifest_is_refused(root):
    store = TableStore(DataLayout(root).tables)
    store.write("t", _obs([1]))
    fs, path = open_fs(store.manifest_path("t"))
    data = json.loads(fs.cat_file(path))
    data["files"][0]["rows"] = 99
    fs.pipe_file(path, json.dumps(data).encode())
    with pytest.raises(InputError, match="digest"):
        store.manifest("t")


def test_verify_detects_changed_file(root):
    store = TableStore(DataLayout(root).tables)
    m = store.write("t", _obs([1]))
    other = pa.table({"obsid": ["9"], "cycle": [1], "v": ["x"]})
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(other, sink)
    atomic_write_bytes(f"{store.table_dir('t')}/{m.files[0].path}", sink.getvalue())
    with pytest.raises(InputError, match="does not match"):
        store.read("t", verify=True)


def test_missing_table_is_a_clear_error(root):
    with pytest.raises(InputError, match="'nope' does not exist"):
        TableStore(root).read("nope")


def test_image_store_is_content_addressed_and_idempotent(root):
    images = ImageStore(DataLayout(root).images)
    k1 = images.put(b"jpeg-bytes")
    k2 = images.put(b"jpeg-bytes")
    assert k1 == k2 and images.keys() == [k1]
    assert images.get(k1) == b"jpeg-bytes"
    with pytest.raises(InputError):
        images.get("0" * 64)
    with pytest.raises(InputError):
        images.path("../../etc/passwd")


def test_manifest_json_round_trip():
    m = Manifest(name="x", config={"k": [1, 2]})
    assert Manifest.from_json(m.to_json()).digest == m.digest
