"""The stage end to end: shards, HF compatibility, versions, caching, quarantine, tampering."""

import io
import json
import uuid
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from schemas.arrow import PREVIEWS_SCHEMA
from schemas.dataset import SPLITS, BuildDatasetParams, Example
from schemas.errors import InputError
from storage import DataLayout, ImageStore, TableStore
from storage.fs import atomic_write_bytes, exists, join, open_fs, read_text
from storage.tables import table_from_records
from tasks.dataset import gc_versions, latest_version, list_versions, open_dataset, run_build_dataset
from tasks.dataset.synthetic import sky_jpeg, write_synthetic_inputs
from tests.tasks.dataset.conftest import SMALL


def _params(data, **kw):
    return BuildDatasetParams(data=data, image_size=SMALL, row_group_rows=8, shard_target_mb=0.05, **kw)


def test_splits_hold_every_example_and_no_proposal_twice(built):
    assert sum(built.count(s) for s in SPLITS) == 120
    proposals = {s: set(built.read_metadata(s).column("proposal_id").to_pylist()) for s in SPLITS}
    assert not proposals["train"] & proposals["val"] and not proposals["train"] & proposals["test"]
    assert not proposals["val"] & proposals["test"]
    for split in SPLITS:
        assert set(built.read_metadata(split).column("split").to_pylist()) <= {split}
    stats = built.manifest.stats
    assert stats["examples"]["total"] == 120 and stats["proposals"]["train"] == len(proposals["train"])
    assert stats["caption_words"]["caption_summary"]["max"] >= stats["caption_words"]["caption_summary"]["min"] > 0


def test_shards_are_zstd_with_small_row_groups_and_sized_to_target(built):
    shards = built.shards("train")
    assert len(shards) > 1  # 0.05 MB target with ~7 KB images: several shards
    for shard in shards:
        meta = pq.ParquetFile(shard.url).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == list(shard.row_groups)
        assert all(n <= 8 for n in shard.row_groups)
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert b"huggingface" in pq.read_schema(shard.url).metadata


def test_hugging_face_datasets_loads_the_shards_as_pictures(built, tmp_path):
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("parquet", data_files=built.data_files(), cache_dir=str(tmp_path / "hf"))
    assert {s: loaded[s].num_rows for s in loaded} == {s: built.count(s) for s in SPLITS if built.count(s)}
    assert isinstance(loaded["train"].features["image"], datasets.Image)
    first = loaded["train"][0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (SMALL, SMALL)
    assert first["caption_summary"] and first["proposal_id"]


def test_unchanged_inputs_rebuild_nothing_and_config_names_a_new_version(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SMALL)
    first = run_build_dataset(_params(data))
    manifest_text = read_text(first.outputs["manifest"])
    again = run_build_dataset(_params(data))
    assert again.cached and again.digest == first.digest
    assert read_text(first.outputs["manifest"]) == manifest_text  # not rewritten
    other = run_build_dataset(_params(data, split_salt="another"))
    assert not other.cached and other.digest != first.digest
    assert latest_version(data) == other.digest
    # New input rows change an input digest, hence the version.
    write_synthetic_inputs(data, proposals=7, images_per_proposal=2, size=SMALL)
    assert run_build_dataset(_params(data)).digest not in (first.digest, other.digest)
    forced = run_build_dataset(_params(data, rebuild=True))
    assert not forced.cached


def test_bad_images_are_quarantined_and_the_build_goes_on(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=5, images_per_proposal=2, size=SMALL)
    layout = DataLayout(data)
    tables, images = TableStore(layout.tables), ImageStore(layout.images)
    rng = np.random.default_rng(3)
    good = sky_jpeg(rng, SMALL)
    png = io.BytesIO()
    Image.new("RGB", (SMALL, SMALL)).save(png, "PNG")
    keys = {
        "truncated": images.put(good[: len(good) // 2]),
        "wrong_size": images.put(sky_jpeg(rng, SMALL // 2)),
        "png": images.put(png.getvalue()),
        "missing": "0" * 64,
        "corrupt": images.put(sky_jpeg(rng, SMALL)),
    }
    atomic_write_bytes(images.path(keys["corrupt"]), good)  # bytes no longer hash to their key
    previews = tables.read("previews").to_pylist()
    for row, key in zip(previews, keys.values(), strict=False):
        row["sha256"] = key
    tables.write("previews", table_from_records(previews, PREVIEWS_SCHEMA))

    result = run_build_dataset(_params(data))
    assert result.stats["examples"]["total"] == 5
    assert result.stats["quarantined"] == {"unreadable_image": 2, "bad_image_size": 1, "missing_image": 1,
                                           "corrupt_image": 1, "total": 5}
    quarantine = tables.read("quarantine").to_pylist()
    assert {q["record_id"] for q in quarantine} == {r["obsid"] for r in previews[:5]}
    assert all(q["stage"] == "build_dataset" and q["detail"] for q in quarantine)


def test_a_killed_build_leaves_no_version_and_the_next_run_completes(tmp_path, monkeypatch):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=8, images_per_proposal=4, size=SMALL)
    import tasks.dataset.stage as stage

    calls = {"n": 0}
    real = stage.check_jpeg

    def dies_midway(payload, size):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt  # as if the process were killed
        return real(payload, size)

    monkeypatch.setattr(stage, "check_jpeg", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        run_build_dataset(_params(data))
    assert list_versions(data) == [] and latest_version(data) is None
    fs, root = open_fs(DataLayout(data).datasets)
    leftovers = [p for p in fs.find(root) if p.rsplit("/", 1)[-1].startswith(".tmp-")]
    assert leftovers == []  # the shard in progress was discarded, never half-renamed
    with pytest.raises(InputError):
        open_dataset(data)
    monkeypatch.setattr(stage, "check_jpeg", real)
    result = run_build_dataset(_params(data))
    assert not result.cached and open_dataset(data).count("train") + open_dataset(data).count("val") + \
        open_dataset(data).count("test") == 32


def test_tampered_manifest_or_shard_is_refused(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SMALL)
    result = run_build_dataset(_params(data))
    manifest_path = result.outputs["manifest"]
    original = read_text(manifest_path)
    edited = json.loads(original)
    edited["files"][0]["rows"] += 1
    atomic_write_bytes(manifest_path, json.dumps(edited).encode())
    with pytest.raises(InputError, match="digest"):
        open_dataset(data)
    atomic_write_bytes(manifest_path, original.encode())
    shard = open_dataset(data).shards("train")[0]
    fs, path = open_fs(shard.url)
    payload = bytearray(fs.cat_file(path))
    payload[len(payload) // 2] ^= 0xFF
    atomic_write_bytes(shard.url, bytes(payload))
    with pytest.raises(InputError, match="sha256"):
        open_dataset(data)
    assert open_dataset(data, verify=False).version == result.digest
    # A stage run notices nothing (the manifest is intact) but the reader refuses: rebuild mends it.
    run_build_dataset(_params(data, rebuild=True))
    assert open_dataset(data).version == result.digest


def test_list_and_gc_keep_latest_and_remove_interrupted_builds(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SMALL)
    old = run_build_dataset(_params(data, split_salt="old")).digest
    new = run_build_dataset(_params(data, split_salt="new")).digest
    interrupted = join(DataLayout(data).datasets, "0123456789abcdef")
    atomic_write_bytes(join(interrupted, "train", "part-00000.parquet"), b"partial")
    listed = list_versions(data)
    assert [v["version"] for v in listed] == [new, old] and listed[0]["latest"]
    assert gc_versions(data, keep=0, dry_run=True, min_age_s=3600) == [old]  # the build may still be running
    writing = tmp_path / "data" / "datasets" / "0123456789abcdef" / "val" / ".tmp-part-00000.parquet"
    writing.parent.mkdir(parents=True)
    writing.write_bytes(b"half a shard")  # the shard the build is writing now
    assert gc_versions(data, keep=2, min_age_s=3600) == [] and writing.exists()
    assert sorted(gc_versions(data, keep=0, dry_run=True)) == sorted([old, "0123456789abcdef"])
    assert exists(join(DataLayout(data).datasets, old))
    gc_versions(data, keep=0)
    assert [v["version"] for v in list_versions(data)] == [new]
    assert not exists(interrupted)


def test_gc_removes_nothing_when_latest_or_a_manifest_is_damaged(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SMALL)
    old = run_build_dataset(_params(data, split_salt="old")).digest
    new = run_build_dataset(_params(data, split_salt="new")).digest
    datasets = DataLayout(data).datasets
    # `latest` emptied or garbled: gc used to take the version it named for an unprotected one.
    for content in (b"", b"../../tables\n", b"\xff\xfe"):
        atomic_write_bytes(join(datasets, "latest"), content)
        with pytest.raises(InputError, match=r"datasets/latest does not name a dataset version"):
            gc_versions(data, keep=1)
        with pytest.raises(InputError, match=r"datasets/latest does not name a dataset version"):
            open_dataset(data)
        assert exists(join(datasets, old, "manifest.json")) and exists(join(datasets, new, "manifest.json"))
        assert {v["version"] for v in list_versions(data)} == {old, new}  # still listed, to repair from
    atomic_write_bytes(join(datasets, "latest"), f"{new}\n".encode())
    # A damaged manifest: named by the reader; its version is not an interrupted build to gc.
    manifest = join(datasets, old, "manifest.json")
    for content, problem in ((b'{"name": "dataset", ', "not valid JSON"), (b"[]", "holds a JSON list"),
                             (b'{"name": "dataset", "files": 3}', "not a valid manifest .files")):
        atomic_write_bytes(manifest, content)
        with pytest.raises(InputError, match=rf"manifest .*{old}/manifest.json is unreadable.*{problem}"):
            open_dataset(data, old)
        assert gc_versions(data, keep=0) == [] and exists(manifest)
        assert [v["version"] for v in list_versions(data)] == [new]


def test_builds_and_reads_on_an_fsspec_memory_root(tokenizer):
    data = f"memory://hubbleclip-{uuid.uuid4().hex}"
    write_synthetic_inputs(data, proposals=6, images_per_proposal=3, size=SMALL)
    result = run_build_dataset(_params(data))
    opened = open_dataset(data)
    assert opened.version == result.digest and sum(opened.count(s) for s in SPLITS) == 18
    batch = next(iter(opened.make_loader("train", tokenizer, batch_size=4, image_size=64)))
    assert batch.images.shape == (4, 3, 64, 64)


def test_real_size_previews_give_224_crops(tmp_path, tokenizer):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=4, images_per_proposal=2, size=512)
    run_build_dataset(BuildDatasetParams(data=data))
    opened = open_dataset(data)
    shard = opened.shards("train")[0]
    row = pq.ParquetFile(shard.url).read_row_group(0).slice(0, 1).to_pylist()[0]
    assert Image.open(io.BytesIO(row["image"]["bytes"])).size == (512, 512)
    batch = next(iter(opened.make_loader("train", tokenizer, batch_size=2)))
    assert batch.images.shape == (2, 3, 224, 224) and batch.images.dtype.is_floating_point is False
    assert batch.tokens.shape == (2, 77)
    assert pa.types.is_struct(pq.read_schema(shard.url).field("image").type)


def test_cycle_split_tests_on_the_later_cycle(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=12, images_per_proposal=2, size=SMALL, cycles=(20, 21, 22))
    opened = open_dataset(data, run_build_dataset(_params(data, split_mode="cycle", cycle_cutoff=21)).digest)
    assert set(opened.read_metadata("test").column("cycle").to_pylist()) == {22}
    early = opened.read_metadata("train").column("cycle").to_pylist() + \
        opened.read_metadata("val").column("cycle").to_pylist()
    assert set(early) <= {20, 21} and len(early) == 16


def test_missing_summaries_are_counted_and_optional(tmp_path, tokenizer):
    data = str(tmp_path / "data")
    inputs = write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SMALL)
    tables = TableStore(DataLayout(data).tables)
    summaries = tables.read("summaries")
    tables.write("summaries", summaries.filter(pa.array([p in inputs.proposals[:4]
                                                         for p in summaries.column("proposal_id").to_pylist()])))
    strict = run_build_dataset(_params(data))
    assert strict.stats["quarantined"]["no_summary"] == 4 and strict.stats["examples"]["total"] == 8
    assert Counter(q["reason"] for q in tables.read("quarantine").to_pylist())["no_summary"] == 4
    lenient = open_dataset(data, run_build_dataset(_params(data, require_summary=False)).digest)
    assert sum(lenient.count(s) for s in SPLITS) == 12
    # An example without a summary falls back to an abstract window for a 'summary' caption.
    split = next(s for s in SPLITS if "" in lenient.read_metadata(s).column("caption_summary").to_pylist())
    captions = [c for b in lenient.make_loader(split, tokenizer, batch_size=1, image_size=32) for c in b.captions]
    assert any(c.startswith("Category: ") for c in captions)


def test_a_build_plans_its_version_from_one_read_of_the_input_manifests(tmp_path, monkeypatch):
    import tasks.dataset.stage as stage

    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=4, images_per_proposal=2, size=SMALL)
    reads = []
    read_digests = stage.input_digests
    monkeypatch.setattr(stage, "input_digests", lambda *a, **kw: reads.append(1) or read_digests(*a, **kw))
    first = run_build_dataset(_params(data))
    assert not first.cached and len(reads) == 1  # built_version and plan_build share one read
    assert run_build_dataset(_params(data)).cached and len(reads) == 2


def test_a_plan_reads_the_input_versions_its_id_names_even_after_an_input_moves_on(tmp_path):
    from tasks.dataset.stage import plan_build, plan_version

    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=4, images_per_proposal=2, size=SMALL)
    planned = plan_version(_params(data))
    write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SMALL)  # a refresh commits meanwhile
    plan = plan_build(_params(data), planned)
    assert plan.version == planned[0] and len(plan.examples.examples) == 8
    assert len(plan_build(_params(data)).examples.examples) == 12


def test_a_shard_writer_puts_everything_it_is_given_into_its_one_shard(built, tmp_path):
    from tasks.dataset.shards import SplitShardWriter, sha256_of

    rows = list(built.iter_examples("train"))
    examples = [Example(**{**row, "image": row["image"]["bytes"]}) for row in rows]
    root = str(tmp_path / "version")
    # The plan cuts shards (plan_chunks), not the writer: everything it is given lands in one file.
    writer = SplitShardWriter(root, "train", row_group_rows=8, first_part=3)
    for example in examples:
        writer.add(example)
    shard = writer.close()
    assert shard.path == "train/part-00003.parquet" and shard.rows == len(examples) > 8
    assert list(shard.row_groups) == [8] * (len(examples) // 8) + ([len(examples) % 8] if len(examples) % 8 else [])
    fs, path = open_fs(join(root, shard.path))
    assert sha256_of(fs, path) == shard.sha256 and fs.size(path) == shard.bytes
    assert [p.name for p in (tmp_path / "version" / "train").iterdir()] == ["part-00003.parquet"]
    assert pq.read_table(path, columns=["obsid"]).column("obsid").to_pylist() == [r["obsid"] for r in rows]

    empty = SplitShardWriter(str(tmp_path / "empty"), "val", row_group_rows=8)
    assert empty.close() is None and not (tmp_path / "empty").exists()
