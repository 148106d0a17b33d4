"""CPU training benchmark: the tiny preset learns the synthetic sky; the shuffled control does not.

    python -m benchmarks.train_cpu [--data DIR] [--proposals 400] [--budget-s 300] [--threads 2]

1. Data, through the project's real stages (no Prefect needed): the synthetic sky
   (tasks.archive.sky), served by the local MAST-compatible archive, ingested with astroquery
   (tasks.mast), summarized by the extractive backend (tasks.summarize), built into a dataset
   version (tasks.dataset). Cached under --data, so a second run goes straight to training.
2. Training: the tiny preset (tasks.train.run_train) on --threads CPU threads, and the same
   config with shuffled pairs as the control; each must finish within --budget-s seconds.
3. Prints held-out (validation split) in-batch-of-100 top-10% retrieval for both, beside chance
   (0.10) and the targets (trained >= 0.8 within 5 minutes on 2 cores; control <= 0.15).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file (python benchmarks/x.py) on a box without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_TRAINED = 0.80
TARGET_CONTROL = 0.15
CHANCE = 0.10


def prepare_dataset(root: Path, proposals: int, seed: int) -> str:
    """The sky through ingest, summarize and build_dataset; returns the dataset version."""
    from flows.demo import ensure_sky
    from tasks.archive.server import ArchiveServer
    from tasks.mast_config import configure_astroquery

    started = time.perf_counter()
    # The demo's helper: generates once, and refuses a sky of another size or seed under --data.
    sky = ensure_sky(root / "sky", proposals, seed, mean_observations=7.0)
    print(f"sky: {proposals} proposals ready in {time.perf_counter() - started:.0f} s")
    server = ArchiveServer(sky_dir=sky, port=0).start()
    try:
        configure_astroquery(server.url)  # before anything imports astroquery.mast
        from schemas.dataset import BuildDatasetParams
        from schemas.ingest import IngestParams
        from schemas.summary import SummarizeParams
        from tasks.dataset import run_build_dataset
        from tasks.mast.stage import run_ingest
        from tasks.summarize.stage import run_summarize

        started = time.perf_counter()
        run_ingest(IngestParams(data=str(root), mast_url=server.url, stsci_url=server.url, seed=seed))
        run_summarize(SummarizeParams(data=str(root), backend="extractive"))
        built = run_build_dataset(BuildDatasetParams(data=str(root)))
        print(f"dataset {built.digest}: {built.stats.get('examples')} "
              f"({'cached' if built.cached else f'{time.perf_counter() - started:.0f} s'})")
        return built.digest
    finally:
        server.stop()


def train(root: Path, version: str, *, shuffled: bool, steps: int, batch_size: int, seed: int) -> dict:
    from schemas.train import TrainParams
    from tasks.train import run_train

    params = TrainParams(data=str(root), dataset_version=version, preset="tiny", steps=steps,
                         batch_size=batch_size, shuffled_pairs=shuffled, seed=seed, device="cpu")
    started = time.perf_counter()
    result = run_train(params)
    seconds = time.perf_counter() - started
    final = result.stats.get("final_val") or {}
    return {"seconds": seconds if not result.cached else float("nan"), "cached": result.cached,
            "top10": final.get("top10pct_image_to_text", float("nan")),
            "top10_t2i": final.get("top10pct_text_to_image", float("nan")),
            "pairs": final.get("pairs"), "samples_per_s": result.stats.get("samples_per_s"),
            "run": result.outputs["run_dir"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="./bench-data/train_cpu")
    parser.add_argument("--proposals", type=int, default=1200)
    parser.add_argument("--steps", type=int, default=None, help="default: the tiny preset's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the tiny preset's")
    parser.add_argument("--budget-s", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from tasks.train import get_preset

    preset = get_preset("tiny")
    steps = args.steps or preset["steps"]
    batch = args.batch_size or preset["batch_size"]
    root = Path(args.data).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    version = prepare_dataset(root, args.proposals, args.seed)
    trained = train(root, version, shuffled=False, steps=steps, batch_size=batch, seed=args.seed)
    control = train(root, version, shuffled=True, steps=steps, batch_size=batch, seed=args.seed)

    print(f"\ntiny preset, {steps} steps x {batch}, {args.threads} threads; held-out val "
          f"({trained['pairs']:.0f} pairs), in-batch-of-100 top-10% (chance {CHANCE:.2f})")
    print(f"{'run':<18}{'i->t':>8}{'t->i':>8}{'seconds':>10}{'samples/s':>11}  target")
    for name, r, target in (("fine-tuned", trained, f">= {TARGET_TRAINED}"),
                            ("shuffled control", control, f"<= {TARGET_CONTROL}")):
        print(f"{name:<18}{r['top10']:>8.3f}{r['top10_t2i']:>8.3f}{r['seconds']:>10.1f}"
              f"{(r['samples_per_s'] or float('nan')):>11.0f}  {target}")
    ratio = trained["top10"] / max(control["top10"], 1e-9)
    print(f"fine-tuned / control: {ratio:.1f}x")
    ok = (trained["top10"] >= TARGET_TRAINED and control["top10"] <= TARGET_CONTROL
          and (trained["cached"] or trained["seconds"] <= args.budget_s))
    print("PASS" if ok else "FAIL: see the targets above (cached runs report no time; delete runs/ to re-time)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
