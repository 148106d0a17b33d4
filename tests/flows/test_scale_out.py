"""summarize and build_dataset scale out: their batch and shard tasks run on the workers of a real
local Dask cluster (prefect-dask's DaskTaskRunner, two worker processes), and the outputs are the
same, byte for byte, as on the default thread runner and as the plain-Python stage's.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from flows.build_dataset import build_dataset
from flows.summarize import summarize
from schemas.dataset import BuildDatasetParams
from schemas.summary import SummarizeParams
from storage.fs import read_text
from storage.layout import DataLayout
from storage.tables import TableStore
from tasks.dataset import open_dataset, run_build_dataset
from tasks.dataset.stage import plan_build
from tasks.dataset.synthetic import write_synthetic_inputs
from tasks.summarize import run_summarize
from tasks.summarize.stage import CHUNK_ABSTRACTS

pytest.importorskip("prefect_dask")

SIZE = 64
PROPOSALS = 2 * CHUNK_ABSTRACTS + 10  # three batches of abstracts


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    # memory_limit=0: no spill directory named `storage` on the workers' sys.path (flows.pipeline._dask).
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=0) as local:
        yield local


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, str]:
    """Three copies of the same inputs: for the thread runner, for Dask and for the plain stage."""
    base = tmp_path_factory.mktemp("scale-out")
    write_synthetic_inputs(str(base / "inputs"), proposals=PROPOSALS, images_per_proposal=1, size=SIZE,
                           summaries=False, seed=4)
    copies = {}
    for name in ("threads", "dask", "plain"):
        shutil.copytree(base / "inputs", base / name)
        copies[name] = str(base / name)
    return copies


def _on_dask(flow_obj, cluster):
    from prefect_dask import DaskTaskRunner

    return flow_obj.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))


def _dask_tasks(cluster, run) -> tuple[object, Counter, set[str]]:
    """Run `run()`; return its result, the task functions Dask ran (by name) and the workers that ran them."""
    from distributed import Client, get_task_stream

    with Client(cluster) as client, get_task_stream(client) as stream:
        result = run()
    ran = Counter(record["key"].rsplit("-", 1)[0] for record in stream.data)
    workers = {record["worker"] for record in stream.data}
    return result, ran, workers


def _table(root: str, name: str):
    store = TableStore(DataLayout(root).tables)
    return store.manifest(name), store.read(name).to_pylist()


def _summarized(root: str) -> str:
    """The root, with a summaries table (made by the plain stage unless a test made it already)."""
    if TableStore(DataLayout(root).tables).manifest("summaries") is None:
        run_summarize(SummarizeParams(data=root))
    return root


def _shards(root: str, version: str) -> list[tuple[str, str, int]]:
    return sorted((f.path, f.sha256, f.rows) for f in open_dataset(root, version).manifest.files)


def test_summarize_batches_run_on_dask_workers_and_write_the_same_table(cluster, roots):
    params = {name: SummarizeParams(data=root) for name, root in roots.items()}
    threads = summarize(params["threads"])
    dask, ran, workers = _dask_tasks(cluster, lambda: _on_dask(summarize, cluster)(params["dask"]))
    plain = run_summarize(params["plain"])

    assert threads.stats["batches"] == dask.stats["batches"] == plain.stats["batches"] == 3
    assert ran["summarize_batch_task"] == 3, ran  # every batch ran on a worker, none twice
    assert workers and workers <= set(cluster.scheduler_info["workers"])
    assert not threads.cached and threads.stats["summaries"] > 2 * CHUNK_ABSTRACTS
    assert threads.digest == dask.digest == plain.digest  # files, schema, inputs, config
    manifests, rows = zip(*(_table(roots[name], "summaries") for name in ("threads", "dask", "plain")), strict=True)
    assert rows[0] == rows[1] == rows[2]
    assert [f.sha256 for f in manifests[0].files] == [f.sha256 for f in manifests[1].files]
    assert threads.stats["generated"] == dask.stats["generated"] and dask.stats["failed"] == threads.stats["failed"]
    cache = TableStore(DataLayout(roots["dask"]).tables).read("summary_cache")
    assert cache.num_rows == dask.stats["generated"]  # each batch's summaries cached once, by the flow

    again, ran, _ = _dask_tasks(cluster, lambda: _on_dask(summarize, cluster)(params["dask"]))
    assert again.cached and again.digest == dask.digest and not ran  # up to date: no task at all


def test_build_dataset_shards_run_on_dask_workers_and_are_the_same_files(cluster, roots):
    params = {name: BuildDatasetParams(data=root, image_size=SIZE, row_group_rows=8, shard_target_mb=0.04)
              for name, root in roots.items()}
    for root in roots.values():  # the summaries the build reads (identical: see the test above)
        _summarized(root)
    chunks = len(plan_build(params["dask"]).chunks)
    assert chunks > 3  # several shards in train, so several tasks

    threads = build_dataset(params["threads"])
    dask, ran, workers = _dask_tasks(cluster, lambda: _on_dask(build_dataset, cluster)(params["dask"]))
    plain = run_build_dataset(params["plain"])

    assert ran["build_shard_task"] == chunks, ran
    assert workers and workers <= set(cluster.scheduler_info["workers"])
    assert threads.digest == dask.digest == plain.digest and not dask.cached
    shards = _shards(roots["dask"], dask.digest)
    assert len(shards) == chunks
    assert shards == _shards(roots["threads"], threads.digest) == _shards(roots["plain"], plain.digest)
    assert open_dataset(roots["dask"]).version == dask.digest  # `latest` moved by the flow
    for key in ("examples", "proposals", "quarantined", "caption_words"):
        assert dask.stats[key] == threads.stats[key] == plain.stats[key], key
    row_groups = [open_dataset(roots[name], dask.digest).manifest.stats["row_groups"] for name in roots]
    assert row_groups[0] == row_groups[1] == row_groups[2]

    manifest = read_text(dask.outputs["manifest"])
    again, ran, _ = _dask_tasks(cluster, lambda: _on_dask(build_dataset, cluster)(params["dask"]))
    assert again.cached and again.digest == dask.digest and not ran  # nothing rebuilt, no task submitted
    assert read_text(dask.outputs["manifest"]) == manifest


def test_a_chunk_is_a_shard_and_shards_hold_whole_row_groups(roots, tmp_path):
    root = str(tmp_path / "data")
    shutil.copytree(_summarized(roots["plain"]), root)
    params = BuildDatasetParams(data=root, image_size=SIZE, row_group_rows=4, shard_target_mb=0.02)
    plan = plan_build(params)
    parts = Counter(c.split for c in plan.chunks)
    assert [c.part for c in plan.chunks if c.split == "train"] == list(range(parts["train"]))
    for split, count in parts.items():  # every chunk but a split's last is whole row groups
        assert all(len(c.examples) % 4 == 0 for c in plan.chunks if c.split == split and c.part < count - 1)
    assert sum(len(c.examples) for c in plan.chunks) == len(plan.examples.examples)
    built = run_build_dataset(params)
    files = open_dataset(root, built.digest).manifest.files
    assert [f.path for f in files if f.partition == "train"] == \
        [f"train/part-{i:05d}.parquet" for i in range(parts["train"])]
    row_groups = open_dataset(root, built.digest).manifest.stats["row_groups"]
    assert all(n <= 4 for groups in row_groups.values() for n in groups)
    assert Path(root, "datasets", built.digest, "manifest.json").exists()


def test_batches_are_bounded_and_vllm_gets_large_ones(tmp_path):
    from tasks.summarize.stage import MAX_BATCHES, VLLM_BATCH_PROMPTS, SummarizePlan, summary_batches

    pending = [{"key": str(i), "proposal_id": str(i), "abstract_sha256": "", "text": "x"} for i in range(20_000)]

    def plan(backend: str) -> SummarizePlan:
        return SummarizePlan(params=SummarizeParams(data=str(tmp_path), backend=backend), started=0.0, inputs={},
                             outputs={}, pending=pending)

    batches = summary_batches(plan("extractive"))
    assert len(batches) <= MAX_BATCHES and [i for b in batches for i in b] == pending
    # vLLM: one call per VLLM_BATCH_PROMPTS, so each finished call reaches the cache (a kill keeps it).
    vllm = summary_batches(plan("vllm"))
    assert [len(b) for b in vllm] == [VLLM_BATCH_PROMPTS] * 19 + [20_000 - 19 * VLLM_BATCH_PROMPTS]
    assert [i for b in vllm for i in b] == pending
    small_vllm = plan("vllm")
    small_vllm.pending = pending[:VLLM_BATCH_PROMPTS]
    assert len(summary_batches(small_vllm)) == 1  # a small run is still one call
    small_vllm.pending = pending[:VLLM_BATCH_PROMPTS + 1]
    assert [len(b) for b in summary_batches(small_vllm)] == [VLLM_BATCH_PROMPTS, 1]
    small = plan("extractive")
    small.pending = pending[:CHUNK_ABSTRACTS + 1]
    assert [len(b) for b in summary_batches(small)] == [CHUNK_ABSTRACTS, 1]


def test_a_process_loads_its_backend_once_for_all_its_batches(tmp_path, monkeypatch):
    import tasks.summarize.stage as stage
    from tasks.summarize.backends.extractive import ExtractiveBackend

    created, closed = [], []

    class Counted(ExtractiveBackend):
        def close(self) -> None:
            closed.append(self)

    def create(params):
        created.append(params)
        return Counted(params.limits)

    monkeypatch.setattr(stage, "create_backend", create)
    params = SummarizeParams(data=str(tmp_path))
    config = stage.summary_config(params, "m")
    item = {"key": "f" * 64, "proposal_id": "1", "abstract_sha256": "0" * 64,
            "text": "Deep imaging of dwarf galaxies to measure their star formation histories."}
    try:
        first = stage.summarize_batch(params, config, [item])
        stage.summarize_batch(params.model_copy(update={"data": "elsewhere", "limit": 5}), config, [item])
        assert len(created) == 1 and not closed  # same backend settings: reused, kept loaded
        assert first["rows"][0]["cache_key"] == "f" * 64 and first["stats"]["outputs"] == 1
        stage.summarize_batch(params.model_copy(update={"max_items": 2}), config, [item])
        assert len(created) == 2 and len(closed) == 1  # another backend replaces it: one per process
    finally:
        stage.release_backends()
    assert len(closed) == 2


def test_a_dask_address_nobody_answers_at_is_an_error_naming_it_before_any_stage():
    import socket

    from flows.pipeline import check_scheduler_reachable
    from schemas.errors import InputError

    with socket.socket() as listener:  # a scheduler's port, as far as a TCP connect can tell
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        check_scheduler_reachable(f"tcp://127.0.0.1:{port}")
        check_scheduler_reachable(f"127.0.0.1:{port}")
    with pytest.raises(InputError, match=rf"no Dask scheduler answers at 127.0.0.1:{port} \(dask_address, --dask\)"):
        check_scheduler_reachable(f"127.0.0.1:{port}")  # closed now (was: a minute of retries, 535 lines)
    with pytest.raises(InputError, match="'nope:x' is not host:port"):
        check_scheduler_reachable("nope:x")
    with pytest.raises(InputError, match="no Dask scheduler answers at no-such-host.invalid:1"):
        check_scheduler_reachable("no-such-host.invalid:1")
