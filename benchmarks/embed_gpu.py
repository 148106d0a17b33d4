"""Embedding throughput for evaluation: images/s of `tasks.evaluate.embed.embed_images` (no Prefect).

    python benchmarks/embed_gpu.py [--model ViT-B-16] [--images 20000] [--batch 512] [--data DIR]
    python -m benchmarks.embed_gpu --model hubbleclip-tiny --images 256 --device cpu   # CPU smoke run

Measures the evaluation path as it runs on a GPU box: 512x512 preview JPEGs (from a dataset
version's shards with --data, else synthetic HST-like previews) -> decode -> eval transform
(resize, centre crop, normalise) -> `encode_image` in bf16 -> unit float32 embeddings. Two image
paths, in the same process on the same model and device:
  torch  JPEGs decoded on the device (nvJPEG on CUDA), transformed as batched tensors (ours, `auto`
         on CUDA)
  pil    baseline: PIL decode + open_clip's eval transform in a CPU thread pool, tensors copied over
Target (issue 7): >= 3,000 images/s with ViT-B-16 on an H100 or H200 (random init: weights do not
change the cost). Prints one line per path and the ratio.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/embed_gpu.py` from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

TARGET_IMAGES_PER_S = 3000.0


def synthetic_previews(count: int, size: int = 512, seed: int = 0) -> list[bytes]:
    """Previews that compress like HST ones: dark sky, noise, a few sources, white padding."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        sky = rng.normal(20, 6, size=(size, size)).clip(0, 255)
        img = Image.fromarray(sky.astype(np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(20, 80))):
            x, y = (int(v) for v in rng.integers(0, size, 2))
            r = int(rng.integers(1, 6))
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(150, 255, 3)))
        img = img.filter(ImageFilter.GaussianBlur(1.2))
        if rng.random() < 0.5:  # instrument aspect ratios padded white, as the previews are
            pad = int(rng.integers(20, 120))
            ImageDraw.Draw(img).rectangle((0, 0, size, pad), fill=(255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def dataset_previews(data: str, limit: int) -> list[bytes]:
    from tasks.dataset import open_dataset

    ds = open_dataset(data, "latest", verify=False)
    out: list[bytes] = []
    for split in ("test", "val", "train"):
        for batch in ds.iter_batches(split, ["image"]):
            out += [row["image"]["bytes"] for row in batch.to_pylist()]
            if len(out) >= limit:
                return out[:limit]
    return out


def load_model(name: str, device: str):
    import open_clip
    import torch

    from tasks.evaluate.embed import prepare_model

    if name.startswith("hubbleclip"):
        from tasks.train import register_project_models

        register_project_models()
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return prepare_model(name, model, preprocess, open_clip.get_tokenizer(name), "0" * 64, device=device)


def measure(clip, images: list[bytes], decoder: str, batch: int, workers: int | None) -> dict:
    import torch

    from tasks.evaluate.embed import embed_images

    warm = images[: min(len(images), batch)]
    embed_images(clip, warm, batch_size=batch, decoder=decoder, workers=workers)  # kernels, nvJPEG, cuDNN
    if clip.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    emb = embed_images(clip, images, batch_size=batch, decoder=decoder, workers=workers)
    if clip.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    assert emb.shape[0] == len(images) and np.isfinite(emb).all()
    return {"decoder": decoder, "images": len(images), "seconds": round(seconds, 3),
            "images_per_s": round(len(images) / seconds, 1), "embedding": emb[:64]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--images", type=int, default=20_000, help="images embedded per path")
    parser.add_argument("--distinct", type=int, default=512, help="distinct synthetic JPEGs, cycled")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", default=None, help="read previews from this data root's latest dataset")
    parser.add_argument("--paths", default="torch,pil", help="image paths to time, comma-separated")
    parser.add_argument("--workers", type=int, default=None, help="PIL decode threads (default: cores, <= 16)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import torch

    clip = load_model(args.model, args.device)
    if args.data:
        pool = dataset_previews(args.data, args.images)
    else:
        pool = synthetic_previews(min(args.distinct, args.images))
    images = [pool[i % len(pool)] for i in range(args.images)]
    device_name = torch.cuda.get_device_name(clip.device) if clip.device.type == "cuda" else f"cpu x{os.cpu_count()}"
    print(f"{args.model} on {device_name}: {len(images)} images "
          f"({len(pool)} distinct, mean {np.mean([len(b) for b in pool]) / 1024:.0f} KiB), batch {args.batch}")
    results = {}
    for decoder in [p.strip() for p in args.paths.split(",") if p.strip()]:
        results[decoder] = measure(clip, images, decoder, args.batch, args.workers)
        r = results[decoder]
        print(f"  {decoder:>5}: {r['images_per_s']:>9,.1f} images/s  ({r['seconds']} s)")
    if "torch" in results and "pil" in results:
        a, b = results["torch"]["embedding"], results["pil"]["embedding"]
        agreement = float(np.einsum("ij,ij->i", a, b).min())
        print(f"  torch / pil: {results['torch']['images_per_s'] / results['pil']['images_per_s']:.2f}x; "
              f"min cosine between the two paths' embeddings {agreement:.4f}")
    best = results.get("torch") or next(iter(results.values()))
    ok = best["images_per_s"] >= TARGET_IMAGES_PER_S
    if clip.device.type == "cuda":
        print(f"  target >= {TARGET_IMAGES_PER_S:,.0f} images/s ({args.model}, ours): {'PASS' if ok else 'FAIL'}")
    else:
        print("  no GPU: throughput figures only (the target applies to an H100/H200)")
    if args.json:
        print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "embedding"} for k, v in results.items()}))
    return 0 if ok or clip.device.type != "cuda" else 1


if __name__ == "__main__":
    sys.exit(main())
