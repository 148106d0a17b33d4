"""Dataset benchmark: the shard loader vs PIL + torchvision v2, shard building speed, build memory.

    python -m benchmarks.dataset_bench [--images 2000] [--rss-images 4000] [--batches 40]

Side by side in one process, one thread each (per-core figures):
- baseline: 512-px JPEG files opened with PIL, torchvision v2 transforms (random 224 crop, flips,
  a random quarter turn, float conversion, CLIP normalisation), batched by a DataLoader;
- ours: the Parquet shard loader (per-sample crops and symmetries, uint8 out; the float
  conversion and normalisation move to the GPU), with and without tokenising the captions.
Targets (issue 5): loader >= 1.5x the baseline and >= 500 samples/s per core; shard building
>= 300 images/s per core; peak RSS of a build < 2 GB for 40,000 images (measured in a child
process at --rss-images and, when that is smaller, also at a quarter of it, so the growth with
size is visible; the build streams, so memory should not grow with the image count).

"Per core" divides by CPU seconds used (user + system, all threads) rather than wall time, so
other processes on a shared machine do not distort it; wall-clock rates are printed too.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

LOADER_RATIO_TARGET = 1.5
LOADER_PER_CORE_TARGET = 500.0
BUILD_PER_CORE_TARGET = 300.0
RSS_LIMIT_MB = 2048.0
RSS_AT = 40_000


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(run) -> tuple[int, float, float]:
    """(items, wall seconds, CPU seconds) of run() -> items."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    items = run()
    return items, time.perf_counter() - wall, _cpu_seconds() - cpu


def _write_inputs(data: str, images: int, unique: int) -> None:
    from tasks.dataset.synthetic import write_synthetic_inputs

    per_proposal = 10
    write_synthetic_inputs(data, proposals=max(1, images // per_proposal), images_per_proposal=per_proposal,
                           size=512, unique_images=min(unique, images), seed=0, abstract_sentences=20)


def baseline_loader(files: list[Path], batch_size: int, batches: int) -> int:
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from tasks.dataset.augment import CLIP_MEAN, CLIP_STD

    transform = v2.Compose([
        v2.ToImage(), v2.RandomCrop(224), v2.RandomHorizontalFlip(),
        v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(CLIP_MEAN, CLIP_STD),
    ])

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return batch_size * batches

        def __getitem__(self, i: int):
            with Image.open(files[i % len(files)]) as im:
                return transform(im.convert("RGB"))

    count = 0
    for batch in torch.utils.data.DataLoader(Files(), batch_size=batch_size, shuffle=True, num_workers=0):
        count += batch.shape[0]
    return count


def our_loader(data: str, batch_size: int, batches: int, tokenizer) -> int:
    from tasks.dataset import open_dataset

    loader = open_dataset(data, verify=False).make_loader("train", tokenizer, batch_size=batch_size, seed=0,
                                                           shuffle_buffer=256)
    count = 0
    for i, batch in enumerate(loader):
        count += batch.images.shape[0]
        if i + 1 == batches:
            break
    return count


def _build(data: str, read_threads: int = 1) -> int:
    from schemas.dataset import BuildDatasetParams
    from tasks.dataset import run_build_dataset

    result = run_build_dataset(BuildDatasetParams(data=data, rebuild=True), read_threads=read_threads)
    return int(result.stats["examples"]["total"])


def _own_peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a
    child started from this (torch-laden) process would report the parent's size."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _build_child(data: str, report) -> None:
    _build(data, read_threads=4)
    report.put(_own_peak_rss_mb())


def peak_build_rss_mb(images: int, workdir: str) -> float:
    """Peak RSS (MB) of a child process that builds a dataset of `images` 512-px previews."""
    data = str(Path(workdir) / f"rss-{images}")
    _write_inputs(data, images, unique=200)
    context = multiprocessing.get_context("spawn")
    report = context.Queue()
    child = context.Process(target=_build_child, args=(data, report))
    child.start()
    peak = report.get()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the build child failed with exit code {child.exitcode}")
    return float(peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the benchmark dataset")
    parser.add_argument("--unique", type=int, default=300, help="distinct JPEGs among them")
    parser.add_argument("--batches", type=int, default=40, help="loader batches timed per contender")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rss-images", type=int, default=4000, help="images in the memory measurement (0: skip)")
    args = parser.parse_args(argv)

    import open_clip
    import torch

    torch.set_num_threads(1)
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    with tempfile.TemporaryDirectory(prefix="hubbleclip-dataset-bench-") as workdir:
        data = str(Path(workdir) / "data")
        _write_inputs(data, args.images, args.unique)
        built, build_wall, build_cpu = _measure(lambda: _build(data, read_threads=1))
        files = sorted(Path(data, "images").rglob("*.jpg"))

        # Warm both once (imports, page cache), then time them alternately, best of two.
        baseline_loader(files, args.batch_size, 2)
        our_loader(data, args.batch_size, 2, tokenizer)
        runs: dict[str, list[tuple[int, float, float]]] = {"baseline": [], "ours": [], "ours_no_text": []}
        for _ in range(2):
            runs["baseline"].append(_measure(lambda: baseline_loader(files, args.batch_size, args.batches)))
            runs["ours"].append(_measure(lambda: our_loader(data, args.batch_size, args.batches, tokenizer)))
            runs["ours_no_text"].append(_measure(lambda: our_loader(data, args.batch_size, args.batches, None)))
        rate = {k: max(n / cpu for n, _, cpu in v) for k, v in runs.items()}
        wall = {k: max(n / w for n, w, _ in v) for k, v in runs.items()}

        rss: list[tuple[int, float]] = []
        if args.rss_images:
            sizes = sorted({max(500, args.rss_images // 4), args.rss_images})
            rss = [(n, peak_build_rss_mb(n, workdir)) for n in sizes]

    ratio = rate["ours"] / rate["baseline"]
    build_rate = built / build_cpu
    print(f"dataset_bench: {built} images of 512 px ({args.unique} distinct), batches of {args.batch_size}, "
          f"1 thread, torch {torch.__version__}")
    print(f"{'contender':<44}{'samples/s per core':>20}{'wall samples/s':>16}")
    print(f"{'baseline: PIL files + torchvision v2 (float)':<44}{rate['baseline']:>20.0f}{wall['baseline']:>16.0f}")
    print(f"{'ours: shards -> uint8 224 crops + tokens':<44}{rate['ours']:>20.0f}{wall['ours']:>16.0f}")
    print(f"{'ours: shards -> uint8 224 crops, no text':<44}{rate['ours_no_text']:>20.0f}{wall['ours_no_text']:>16.0f}")
    print(f"loader ratio ours/baseline: {ratio:.2f}x (target >= {LOADER_RATIO_TARGET}x); "
          f"{rate['ours']:.0f} samples/s per core (target >= {LOADER_PER_CORE_TARGET:.0f})")
    print(f"shard build: {build_rate:.0f} images/s per core, {built / build_wall:.0f}/s wall "
          f"(target >= {BUILD_PER_CORE_TARGET:.0f} per core)")
    ok = ratio >= LOADER_RATIO_TARGET and rate["ours"] >= LOADER_PER_CORE_TARGET and build_rate >= BUILD_PER_CORE_TARGET
    if rss:
        for n, mb in rss:
            print(f"build peak RSS at {n} images: {mb:.0f} MB")
        (n1, m1), (n2, m2) = rss[0], rss[-1]
        slope = (m2 - m1) / (n2 - n1) if n2 > n1 else 0.0
        projected = m2 + max(0.0, slope) * (RSS_AT - n2)
        print(f"build peak RSS projected to {RSS_AT} images: {projected:.0f} MB (limit {RSS_LIMIT_MB:.0f} MB; "
              f"growth {slope * 1000:.1f} MB per 1000 images)")
        ok = ok and projected < RSS_LIMIT_MB
    print("dataset_bench:", "PASS" if ok else "BELOW TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
