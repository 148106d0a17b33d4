"""Ingest benchmark: run_ingest vs the paper's sequential per-proposal astroquery loop.

    python -m benchmarks.ingest_bench [--proposals 500] [--latency-ms 50] [--baseline-sample 0]

Both sides talk to the same local archive (a synthetic sky served by `hubbleclip archive serve`
in its own process, every answer delayed by --latency-ms), through the real astroquery, in one
run. The baseline is the reference loop: for each proposal, `query_criteria(proposal_id=...)`,
`get_product_list`, `filter_products(productType="PREVIEW")`, keep "total" and not "color", then
download and preprocess each preview (the same 512x512 preprocessing), one after another.
With --baseline-sample K > 0 the baseline runs on K proposals only and is scaled linearly to all
of them (a sequential loop is linear by construction); the output says so.
Also timed: a refresh with nothing new, as a share of the initial ingest.
Targets (issue 3): ratio >= 10x at 500 proposals; refresh < 5% of the initial ingest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

RATIO_TARGET = 10.0
REFRESH_TARGET = 0.05
CATALOG_PATH = "/hst/proposal-abstracts/catalog.txt"


def _sky(workdir: Path, proposals: int, seed: int) -> Path:
    """The synthetic sky for this size, generated once and reused across runs."""
    from tasks.archive.sky import generate_sky, load_sky_info

    sky = workdir / f"sky-{proposals}-{seed}"
    if (sky / "sky.json").is_file() and load_sky_info(sky).proposals == proposals:
        return sky
    started = time.perf_counter()
    generate_sky(sky, proposals=proposals, seed=seed, overwrite=True)
    print(f"generated sky of {proposals} proposals in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return sky


def _serve(sky: Path, latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "archive", "serve", "--sky", str(sky), "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).resolve().parents[1])
    url = (proc.stdout.readline() if proc.stdout else "").strip()
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("the archive server did not start")
    return proc, url


def baseline_loop(proposal_ids: list[str], out_dir: Path, max_images: int = 20) -> int:
    """The paper's loop, sequential: query, list products, download, preprocess. Returns images."""
    from astroquery.mast import Observations

    from tasks.mast.imaging import ImageRejected, ImageSpec, normalize_preview

    spec = ImageSpec()
    stored = 0
    for pid in proposal_ids:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs = Observations.query_criteria(obs_collection="HST", proposal_id=pid, dataRights="PUBLIC",
                                              dataproduct_type="image", intentType="science")
            if len(obs) == 0:
                continue
            products = Observations.get_product_list(obs)
            previews = Observations.filter_products(products, productType="PREVIEW")
        names = [str(u) for u, f in zip(previews["dataURI"], previews["productFilename"], strict=True)
                 if "total" in str(f) and "color" not in str(f)]
        for uri in names[:max_images]:
            target = out_dir / uri.rsplit("/", 1)[-1]
            status, _, _ = Observations.download_file(uri, local_path=str(target), cache=False, verbose=False)
            if status != "COMPLETE" or not target.is_file():
                continue
            try:
                square, _, _ = normalize_preview(target.read_bytes(), spec)
            except ImageRejected:
                continue
            (out_dir / f"{target.stem}.512.jpg").write_bytes(square)
            stored += 1
    return stored


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--proposals", type=int, default=500, help="proposals in the synthetic sky")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="archive delay before every answer")
    parser.add_argument("--baseline-sample", type=int, default=0,
                        help="run the baseline on this many proposals and scale (0: all of them)")
    parser.add_argument("--concurrency", type=int, default=16, help="ingest download threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hubbleclip-ingest-bench")
    args = parser.parse_args(argv)

    args.workdir.mkdir(parents=True, exist_ok=True)
    sky = _sky(args.workdir, args.proposals, args.seed)
    proc, url = _serve(sky, args.latency_ms)
    try:
        from schemas.ingest import IngestParams
        from schemas.settings import get_settings
        from tasks.mast.stage import run_ingest
        from tasks.mast_config import configure_astroquery

        configure_astroquery(url)
        data = args.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        settings = get_settings(download_concurrency=args.concurrency)
        params = IngestParams(data=str(data), mast_url=url, stsci_url=url, catalog_url=url + CATALOG_PATH)

        started, cpu = time.perf_counter(), _cpu_s()
        result = run_ingest(params, settings)
        ingest_s, ingest_cpu = time.perf_counter() - started, _cpu_s() - cpu
        started = time.perf_counter()
        refreshed = run_ingest(IngestParams.model_validate({**params.model_dump(), "refresh": True}), settings)
        refresh_s = time.perf_counter() - started

        from tasks.mast.http import DocumentClient
        from tasks.mast.parsers import parse_catalog

        catalog, _ = parse_catalog(DocumentClient(settings).get(url + CATALOG_PATH))
        ids = sorted((r.proposal_id for r in catalog), key=int)
        sample = ids[: args.baseline_sample] if 0 < args.baseline_sample < len(ids) else ids
        base_dir = args.workdir / "baseline"
        shutil.rmtree(base_dir, ignore_errors=True)
        base_dir.mkdir()
        started, cpu = time.perf_counter(), _cpu_s()
        base_images = baseline_loop(sample, base_dir)
        base_measured_s, base_cpu = time.perf_counter() - started, _cpu_s() - cpu
        base_s = base_measured_s * len(ids) / len(sample)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    ratio = base_s / ingest_s
    share = refresh_s / ingest_s
    scaled = f" (measured {base_measured_s:.1f} s on {len(sample)} proposals, scaled)" if len(sample) < len(ids) else ""
    print(f"ingest benchmark: {args.proposals} proposals, archive latency {args.latency_ms:.0f} ms")
    images = f"{base_images} images" + (f" in the {len(sample)} measured" if len(sample) < len(ids) else "")
    print(f"  sequential astroquery loop : {base_s:8.1f} s{scaled}, {images}, "
          f"client CPU {base_cpu:.1f} s")
    print(f"  run_ingest (threads={args.concurrency:2d})    : {ingest_s:8.1f} s, {result.stats.get('previews_ok', 0)} images, "
          f"{result.stats.get('queried', 0)} rows, client CPU {ingest_cpu:.1f} s on {os.cpu_count()} cores")
    print(f"  speed-up                   : {ratio:8.1f}x   (target >= {RATIO_TARGET:.0f}x at 500 proposals)")
    print(f"  refresh, nothing new       : {refresh_s:8.2f} s = {100 * share:.1f}% of the ingest "
          f"(target < {100 * REFRESH_TARGET:.0f}%), cached={refreshed.cached}")
    print(json.dumps({"bench": "ingest", "proposals": args.proposals, "latency_ms": args.latency_ms,
                      "baseline_s": round(base_s, 2), "baseline_sampled": len(sample) < len(ids),
                      "ingest_s": round(ingest_s, 2), "ingest_cpu_s": round(ingest_cpu, 2),
                      "baseline_cpu_s": round(base_cpu, 2), "ratio": round(ratio, 2), "refresh_s": round(refresh_s, 3),
                      "refresh_share": round(share, 4)}))
    # The speed-up target is stated at 500 proposals: a smaller sky has too little to overlap.
    judged = args.proposals >= 500
    ok = share < REFRESH_TARGET and (ratio >= RATIO_TARGET or not judged)
    print("PASS" if ok else "FAIL: see the targets above",
          "" if judged else f"(speed-up not judged below 500 proposals: {ratio:.1f}x here)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
