"""Pipeline benchmark: first run vs a rerun with nothing new, Prefect's overhead per task, and the
number of task runs per stage.

    python -m benchmarks.pipeline_bench [--proposals 12] [--steps 20]

Everything real: a synthetic sky served by the local archive, astroquery, every stage's flow on a
temporary local Prefect API (the test harness, heartbeat off as in tests). Targets:
- the rerun takes < 5 % of the first run (every stage a cache hit);
- tasks per stage stay bounded: stages map over batches, never one task per image.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# Before Prefect is imported: a private home, so no cache record leaks in from another run.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="hubbleclip-bench-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

RERUN_TARGET = 0.05
MAX_TASKS_PER_STAGE = 200  # a per-image task would exceed this at the default demo size


def prefect_overhead_per_task(n: int = 50) -> tuple[float, float]:
    """Seconds per task: `n` trivial tasks in one flow vs the same calls as plain functions."""
    from prefect import flow, task

    def work(i: int) -> int:
        return i * i

    started = time.perf_counter()
    for i in range(n):
        work(i)
    plain = time.perf_counter() - started

    work_task = task(work, name="bench-noop")

    @flow(name="bench-overhead")
    def many() -> int:
        return sum(work_task(i) for i in range(n))

    many()  # warm: the first flow run pays for imports and registration
    started = time.perf_counter()
    many()
    orchestrated = time.perf_counter() - started
    return (orchestrated - plain) / n, plain / n


def tasks_per_stage(flow_run_id) -> Counter:
    """Task runs of the pipeline run and of every stage subflow under it, by flow name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    counts: Counter = Counter()
    with get_client(sync_client=True) as client:
        frontier = [flow_run_id]
        while frontier:
            parent = frontier.pop()
            run = client.read_flow_run(parent)
            flow_name = client.read_flow(run.flow_id).name
            offset = 0
            while True:  # the API pages at 200
                page = client.read_task_runs(task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[parent])), limit=200, offset=offset)
                counts[flow_name] += len(page)
                offset += len(page)
                if len(page) < 200:
                    break
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])), limit=200)
            frontier += [c.id for c in children]
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    args = parser.parse_args(argv)

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import pipeline
    from schemas.pipeline import PipelineParams
    from tasks.archive.server import ArchiveServer
    from tasks.archive.sky import generate_sky
    from tasks.mast_config import configure_astroquery

    work = Path(tempfile.mkdtemp(prefix="hubbleclip-bench-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # ~300 MB a run; nothing to keep
    sky = work / "sky"
    generate_sky(sky, proposals=args.proposals, seed=0, mean_observations=4, bad_records=args.proposals >= 10)
    with ArchiveServer(sky_dir=sky) as server, prefect_test_harness(server_startup_timeout=120), \
            temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        configure_astroquery(server.url)
        params = PipelineParams.model_validate({
            "data": str(work / "data"),
            "ingest": {"mast_url": server.url, "stsci_url": server.url},
            "train": {"steps": args.steps, "batch_size": 16, "val_every": args.steps,
                      "checkpoint_every": args.steps},
            "evaluate": {"ground_truth": str(sky / "ground_truth.json")},
        })
        per_task, plain_per_task = prefect_overhead_per_task()

        started = time.perf_counter()
        state = pipeline(params, return_state=True)
        first_s = time.perf_counter() - started
        first = state.result()
        counts = tasks_per_stage(state.state_details.flow_run_id)

        started = time.perf_counter()
        second = pipeline(params)
        rerun_s = time.perf_counter() - started

    images = int(first.stages["ingest"].stats.get("previews_ok", 0)) or 1
    ratio = rerun_s / first_s
    print(f"{'':28s}{'first run':>12s}{'rerun':>12s}")
    print(f"{'pipeline wall time (s)':28s}{first_s:12.2f}{rerun_s:12.2f}   ratio {ratio:.3f} "
          f"(target < {RERUN_TARGET})")
    for name in first.stages:
        print(f"  {name:26s}{first.stats['stage_seconds'][name]:12.2f}{second.stats['stage_seconds'][name]:12.2f}"
              f"   {'cache hit' if name in second.cache_hits else 'RAN'}")
    print(f"prefect overhead per task: {per_task * 1000:.1f} ms (plain call {plain_per_task * 1e6:.1f} us)")
    print(f"task runs per flow ({images} images ingested):")
    for name, count in sorted(counts.items()):
        print(f"  {name:26s}{count:6d}   {count / images:.2f} per image")
    ok = (ratio < RERUN_TARGET and set(second.cache_hits) == set(second.stages)
          and max(counts.values()) <= MAX_TASKS_PER_STAGE)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
