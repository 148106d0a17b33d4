"""`make bench`: every CPU benchmark in turn, each printing its own side-by-side ratios.

GPU benchmarks (benchmarks/train_gpu.py, embed_gpu.py, summarize_bench.py --model random-1b and
the gpu-marked tests) run on an H100/H200, all at once with `make bench-gpu`
(benchmarks/gpu_checks.sh).
Pass `--quick` for a smaller, faster pass of the same measurements.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

# (module, full-size arguments, quick arguments)
BENCHMARKS: tuple[tuple[str, list[str], list[str]], ...] = (
    ("benchmarks.archive_bench", [], ["--proposals", "10", "--seconds", "1"]),
    ("benchmarks.ingest_bench", ["--proposals", "500", "--baseline-sample", "40"],
     ["--proposals", "60", "--baseline-sample", "10"]),
    ("benchmarks.summarize_bench", [], ["--abstracts", "8", "--batch-size", "8"]),
    ("benchmarks.dataset_bench", ["--rss-images", "40000"], ["--images", "500", "--batches", "10", "--rss-images", "0"]),
    ("benchmarks.train_cpu", [], ["--proposals", "120", "--budget-s", "120"]),
    ("benchmarks.search_bench", [], ["--n", "20000", "--queries", "200"]),
    ("benchmarks.pipeline_bench", [], ["--proposals", "6", "--steps", "10"]),
    ("benchmarks.demo_quality", [], ["--quick"]),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same measurements")
    parser.add_argument("--only", default="", help="comma-separated benchmark names (e.g. search_bench)")
    args = parser.parse_args(argv)
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    failures = []
    for module_name, full, quick in BENCHMARKS:
        short = module_name.rsplit(".", 1)[-1]
        if wanted and short not in wanted:
            continue
        print(f"\n=== {short} {' '.join(quick if args.quick else full)}", flush=True)
        started = time.perf_counter()
        try:
            result = importlib.import_module(module_name).main(quick if args.quick else full)
        except SystemExit as exit_:  # argparse or an explicit exit code
            result = exit_.code
        if result not in (None, 0):
            failures.append(short)
        print(f"=== {short}: {time.perf_counter() - started:.1f} s", flush=True)
    if failures:
        print(f"\nbenchmarks below target or failed: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
