"""Summarize benchmark: batched constrained generation vs one prompt at a time, same model.

    python -m benchmarks.summarize_bench [--model tiny-random] [--abstracts 16] [--batch-size 16]
    python -m benchmarks.summarize_bench --model /models/Llama-3.1-8B-Instruct --device cuda --abstracts 256 --batch-size 64

Both sides run the real Outlines + transformers path with one compiled grammar: the baseline calls
the generator once per abstract (the paper's way: one prompt at a time), ours hands it batches of
`--batch-size`. Greedy decoding, so both write the same summaries and the ratio is pure speed.
Target (issue 4): batched >= 4x on a GPU. On this CPU with the tiny random model the gain is
smaller (the model is too small to be compute-bound); the same script runs on a GPU with --model.
The extractive backend's rate is printed for reference (no model).
"""

from __future__ import annotations

import argparse
import sys
import time

from schemas.summary import SamplingConfig, SummaryLimits

GPU_RATIO_TARGET = 4.0
ABSTRACTS = [
    "We propose to measure internal proper motions of stars in the cores of globular clusters to search for "
    "intermediate-mass black holes and to test models of core collapse.",
    "Strong gravitational lensing by merging galaxy clusters lets us map their dark matter and constrain the "
    "self-interaction cross section of dark matter particles.",
    "We will obtain ultraviolet spectroscopy of quasars behind nearby galaxies to probe the circumgalactic medium "
    "and measure the metallicity of the gas that fuels star formation.",
    "Deep imaging of ultra-faint dwarf galaxies will yield color-magnitude diagrams reaching below the "
    "main-sequence turnoff, from which we derive star formation histories and test reionization quenching.",
    "A snapshot survey of planetary nebulae in the Magellanic Clouds will measure their morphologies and "
    "expansion ages and connect them to the masses of their progenitor stars.",
    "We request time to monitor Cepheid variables in supernova host galaxies to calibrate the distance ladder "
    "and the local expansion rate of the universe.",
    "High-resolution images of protoplanetary disks in Taurus will reveal gaps, jets and outflows, and the "
    "scattered light from dust grains in their surfaces.",
    "Narrowband imaging of supernova remnants in M33 will trace interstellar shocks and the chemical abundances "
    "of the ejecta.",
]


def _abstracts(n: int) -> list[str]:
    # Vary the text so every prompt differs (a cache or deduplication cannot help either side).
    return [f"{ABSTRACTS[i % len(ABSTRACTS)]} (Target set {i}.)" for i in range(n)]


def _timed(backend, abstracts: list[str], sampling: SamplingConfig, batch_size: int) -> tuple[float, list]:
    backend.batch_size = batch_size
    started = time.perf_counter()
    if batch_size == 1:
        outputs = [out for a in abstracts for out in backend.generate([a], sampling)]
    else:
        outputs = backend.generate(abstracts, sampling)
    return time.perf_counter() - started, outputs


def _validity(outputs: list, limits: SummaryLimits) -> tuple[int, int]:
    from schemas.summary import summary_model
    from tasks.summarize.generate import parse_output

    reasons = [parse_output(o, summary_model(limits)).reason for o in outputs]
    return reasons.count("ok"), reasons.count("cut_off")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random", help="tiny-random, gemma3-270m, a local path or hub id")
    parser.add_argument("--abstracts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: the grammar's worst case (tiny) or 384")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs; 0 = torch's default)")
    args = parser.parse_args(argv)

    import torch

    from tasks.summarize.backends.extractive import ExtractiveBackend
    from tasks.summarize.backends.transformers_backend import TransformersBackend, load_model
    from tasks.summarize.prompt import load_prompt

    if args.threads:
        torch.set_num_threads(args.threads)
    limits = SummaryLimits()
    model, tokenizer, model_id = load_model(args.model, args.device)
    backend = TransformersBackend(model, tokenizer, model_id, prompt=load_prompt("v1"), limits=limits)
    budget = args.max_new_tokens or (limits.max_output_chars() if args.model == "tiny-random" else 384)
    sampling = SamplingConfig(max_new_tokens=budget)
    abstracts = _abstracts(args.abstracts)
    _timed(backend, abstracts[:2], sampling, 2)  # warm-up: grammar compile, lazy imports, kernels

    one_s, one_out = _timed(backend, abstracts, sampling, 1)
    batch_s, batch_out = _timed(backend, abstracts, sampling, args.batch_size)
    started = time.perf_counter()
    ExtractiveBackend(limits).generate(abstracts * 50, sampling)
    extractive_rate = len(abstracts) * 50 / (time.perf_counter() - started)

    device = str(model.device)
    name = torch.cuda.get_device_name(model.device) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"summarize bench: {model_id} on {name}; {len(abstracts)} abstracts, greedy, max_new_tokens={budget}")
    print(f"{'':28}{'one at a time':>16}{'batched':>16}")
    print(f"{'batch size':28}{1:>16}{args.batch_size:>16}")
    print(f"{'seconds':28}{one_s:>16.2f}{batch_s:>16.2f}")
    print(f"{'abstracts/s':28}{len(abstracts) / one_s:>16.2f}{len(abstracts) / batch_s:>16.2f}")
    print(f"{'output tokens/s':28}{sum(o.output_tokens for o in one_out) / one_s:>16.1f}"
          f"{sum(o.output_tokens for o in batch_out) / batch_s:>16.1f}")
    (ok1, cut1), (ok2, cut2) = _validity(one_out, limits), _validity(batch_out, limits)
    print(f"{'valid summaries':28}{f'{ok1}/{len(one_out)}':>16}{f'{ok2}/{len(batch_out)}':>16}")
    print(f"{'cut off at the token limit':28}{cut1:>16}{cut2:>16}")
    ratio = one_s / batch_s
    target = f"target >= {GPU_RATIO_TARGET:.0f}x on a GPU" if device.startswith("cuda") else "GPU target 4x; CPU for reference"
    print(f"batched / one-at-a-time: {ratio:.2f}x ({target})")
    print(f"extractive backend (no model): {extractive_rate:.0f} abstracts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
