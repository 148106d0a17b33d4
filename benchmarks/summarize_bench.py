"""Summarize benchmark: batched constrained generation vs one prompt at a time, same model.

    python -m benchmarks.summarize_bench [--model tiny-random] [--abstracts 16] [--batch-size 16]
    python -m benchmarks.summarize_bench --model random-1b --device cuda --abstracts 16 --batch-size 16 \
        --max-new-tokens 256 --reference --profile
    python -m benchmarks.summarize_bench --model /models/Llama-3.1-8B-Instruct --device cuda --abstracts 256 --batch-size 64

Both sides run the backend's real path (transformers `generate` under the summary grammar, our
batched logits processor, one compiled grammar): the baseline calls it once per abstract (the
paper's way: one prompt at a time), ours hands it batches of `--batch-size`. Greedy decoding, so
both write the same summaries in float32 (in bf16 on a GPU other kernel shapes can flip a random
model's nearly tied picks; "same text" counts them). A batch decodes until its longest
output ends, so the ratio is (decode steps one at a time / batched) / (cost of a batched step /
a single one); both factors are printed. Target (issue 4): batched >= 4x on a GPU. On this CPU
with the tiny random model the gain is smaller (the model is too small to be compute-bound); the
same script runs on a GPU with --model. The extractive backend's rate is printed for reference.

`--reference` also times both runs through Outlines 1.3.3's own transformers logits processor
(`Generator.batch`, the backend before tasks/summarize/logits.py; same grammar, same tokens). `--profile` splits the time of a decode step into model forward, logits processing and
the rest of `generate`, at batch 1 and at `--batch-size`, for both processors (device-synchronised
timings, so a little slower than the main table).
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


def _decode_steps(outputs: list, batch_size: int) -> int:
    """Decode steps `generate` ran: per batch, its longest output (+1 for the stop token)."""
    steps = [o.output_tokens + (0 if o.hit_token_limit else 1) for o in outputs]
    return sum(max(steps[i:i + batch_size]) for i in range(0, len(steps), batch_size))


class OutlinesReference:
    """The backend as it was: Outlines 1.3.3's `Generator.batch`, whose processor works per sequence."""

    def __init__(self, backend) -> None:
        import outlines

        from schemas.summary import summary_model

        self.backend = backend
        self.batch_size = backend.batch_size
        self.model = backend.model
        self.generator = outlines.Generator(outlines.from_transformers(backend.model, backend.tokenizer),
                                            summary_model(backend.limits))

    def generate(self, abstracts: list[str], sampling: SamplingConfig) -> list:
        import torch
        from outlines.inputs import Chat

        from tasks.summarize.backends.base import RawOutput

        kwargs = {"max_new_tokens": sampling.max_new_tokens, "do_sample": False}
        outputs = []
        for start in range(0, len(abstracts), self.batch_size):
            chunk = abstracts[start:start + self.batch_size]
            texts = [self.backend.prompt.render(a, self.backend.limits) for a in chunk]
            inputs = [Chat([{"role": "user", "content": t}]) for t in texts] if self.backend.has_chat_template else texts
            torch.manual_seed(sampling.seed)
            for text in self.generator.batch(inputs, **kwargs):
                produced = len(self.backend.tokenizer(text, add_special_tokens=False)["input_ids"])
                outputs.append(RawOutput(text, output_tokens=produced, hit_token_limit=produced >= sampling.max_new_tokens))
        return outputs


def _profile(backend, abstracts: list[str], sampling: SamplingConfig, batch_size: int) -> dict[str, float]:
    """Per model call of one run: decode forward, logits processors and the rest of generate, in ms."""
    import torch
    from transformers.generation.logits_process import LogitsProcessorList

    model = backend.model
    cuda = model.device.type == "cuda"
    spent = {"prefill": 0.0, "forward": 0.0, "processor": 0.0, "calls": 0, "steps": 0}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(model.device)

    forward, process = model.forward, LogitsProcessorList.__call__

    def timed_forward(*args, **kwargs):
        sync()
        started = time.perf_counter()
        result = forward(*args, **kwargs)
        sync()
        ids = kwargs.get("input_ids", args[0] if args else None)
        prefill = ids is not None and ids.shape[1] > 1
        spent["prefill" if prefill else "forward"] += time.perf_counter() - started
        spent["calls"] += 1
        spent["steps"] += 0 if prefill else 1
        return result

    def timed_process(self, *args, **kwargs):
        sync()
        started = time.perf_counter()
        result = process(self, *args, **kwargs)
        sync()
        spent["processor"] += time.perf_counter() - started
        return result

    model.forward, LogitsProcessorList.__call__ = timed_forward, timed_process
    try:
        sync()
        total, _ = _timed(backend, abstracts, sampling, batch_size)
    finally:
        del model.forward  # the instance attribute; the class's forward shows through again
        LogitsProcessorList.__call__ = process
    calls, steps = spent["calls"], max(spent["steps"], 1)
    rest = total - spent["prefill"] - spent["forward"] - spent["processor"]
    return {"seconds": total, "steps": steps, "forward_ms": 1e3 * spent["forward"] / steps,
            "processor_ms": 1e3 * spent["processor"] / calls, "rest_ms": 1e3 * rest / calls,
            "prefill_ms": 1e3 * spent["prefill"] / (calls - spent["steps"])}


def _validity(outputs: list, limits: SummaryLimits) -> tuple[int, int]:
    from schemas.summary import summary_model
    from tasks.summarize.generate import parse_output

    reasons = [parse_output(o, summary_model(limits)).reason for o in outputs]
    return reasons.count("ok"), reasons.count("cut_off")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random", help="tiny-random, random-1b, gemma3-270m, a local path or hub id")
    parser.add_argument("--abstracts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: the grammar's worst case (tiny) or 384")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU runs; 0 = torch's default)")
    parser.add_argument("--baseline-sample", type=int, default=0,
                        help="time one-at-a-time on the first N abstracts only and scale it (0: all)")
    parser.add_argument("--reference", action="store_true", help="also time Outlines 1.3.3's own processor (before)")
    parser.add_argument("--profile", action="store_true", help="split a decode step's time, both processors")
    args = parser.parse_args(argv)

    import torch

    from tasks.summarize.backends.extractive import ExtractiveBackend
    from tasks.summarize.backends.transformers_backend import (
        BYTE_LEVEL_MODELS,
        TransformersBackend,
        load_model,
    )
    from tasks.summarize.prompt import load_prompt

    if args.threads:
        torch.set_num_threads(args.threads)
    limits = SummaryLimits()
    model, tokenizer, model_id = load_model(args.model, args.device)
    backend = TransformersBackend(model, tokenizer, model_id, prompt=load_prompt("v1"), limits=limits)
    budget = args.max_new_tokens or (limits.max_output_chars() if args.model in BYTE_LEVEL_MODELS else 384)
    sampling = SamplingConfig(max_new_tokens=budget)
    abstracts = _abstracts(args.abstracts)
    _timed(backend, abstracts[:2], sampling, 2)  # warm-up: grammar compile, lazy imports, kernels

    # One at a time costs the same per abstract however many there are: on a big batch it may be
    # timed on a sample and scaled (said in the output), so the batched side can use a GPU-sized batch.
    sample = min(args.baseline_sample or len(abstracts), len(abstracts))
    sample_s, one_out = _timed(backend, abstracts[:sample], sampling, 1)
    one_s = sample_s * len(abstracts) / sample
    # Progress as it goes (stderr), so a run stopped by a time cap still reports what it measured.
    print(f"one at a time: {sample} abstracts in {sample_s:.2f} s", file=sys.stderr, flush=True)
    batch_s, batch_out = _timed(backend, abstracts, sampling, args.batch_size)
    print(f"batched {args.batch_size}: {len(abstracts)} abstracts in {batch_s:.2f} s", file=sys.stderr, flush=True)
    reference = OutlinesReference(backend) if args.reference or args.profile else None
    if args.reference:
        _timed(reference, abstracts[:2], sampling, 2)  # warm-up: its torch.compile'd masking kernel
        ref_sample_s, ref_one_out = _timed(reference, abstracts[:sample], sampling, 1)
        ref_one_s = ref_sample_s * len(abstracts) / sample
        ref_batch_s, ref_batch_out = _timed(reference, abstracts, sampling, args.batch_size)
    started = time.perf_counter()
    ExtractiveBackend(limits).generate(abstracts * 50, sampling)
    extractive_rate = len(abstracts) * 50 / (time.perf_counter() - started)

    device = str(model.device)
    name = torch.cuda.get_device_name(model.device) if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"summarize bench: {model_id} on {name}; {len(abstracts)} abstracts, greedy, max_new_tokens={budget}")
    if sample < len(abstracts):
        print(f"one at a time timed on the first {sample} abstracts ({sample_s:.2f} s) and scaled to {len(abstracts)}")
    print(f"{'':28}{'one at a time':>16}{'batched':>16}")
    print(f"{'batch size':28}{1:>16}{args.batch_size:>16}")
    print(f"{'seconds':28}{one_s:>16.2f}{batch_s:>16.2f}")
    print(f"{'abstracts/s':28}{len(abstracts) / one_s:>16.2f}{len(abstracts) / batch_s:>16.2f}")
    print(f"{'output tokens/s':28}{sum(o.output_tokens for o in one_out) / sample_s:>16.1f}"
          f"{sum(o.output_tokens for o in batch_out) / batch_s:>16.1f}")
    one_steps = round(_decode_steps(one_out, 1) * len(abstracts) / sample)
    batch_steps = _decode_steps(batch_out, args.batch_size)
    print(f"{'decode steps':28}{one_steps:>16}{batch_steps:>16}")
    print(f"{'ms per decode step':28}{1e3 * one_s / one_steps:>16.2f}{1e3 * batch_s / batch_steps:>16.2f}")
    (ok1, cut1), (ok2, cut2) = _validity(one_out, limits), _validity(batch_out, limits)
    print(f"{'valid summaries':28}{f'{ok1}/{len(one_out)}':>16}{f'{ok2}/{len(batch_out)}':>16}")
    print(f"{'cut off at the token limit':28}{cut1:>16}{cut2:>16}")
    same = sum(a.text == b.text for a, b in zip(one_out, batch_out[:sample], strict=True))
    print(f"{'same text as one at a time':28}{'':>16}{f'{same}/{len(one_out)}':>16}")
    ratio = one_s / batch_s
    target = f"target >= {GPU_RATIO_TARGET:.0f}x on a GPU" if device.startswith("cuda") else "GPU target 4x; CPU for reference"
    print(f"batched / one-at-a-time: {ratio:.2f}x ({target}) = {one_steps / batch_steps:.2f}x fewer decode steps "
          f"/ {(batch_s / batch_steps) / (one_s / one_steps):.2f}x the cost per step")
    if args.reference:
        same = sum(a.text == b.text for a, b in zip(ref_one_out + ref_batch_out, one_out + batch_out, strict=True))
        print(f"Outlines 1.3.3's own processor (the backend before): one at a time {ref_one_s:.2f} s, batched "
              f"{ref_batch_s:.2f} s, {ref_one_s / ref_batch_s:.2f}x; same text as ours: {same}/{sample + len(abstracts)}")
    if args.profile:
        few = abstracts[:min(4, len(abstracts))]
        print(f"per model call, ms (decode forward, logits processors, rest of generate; prefill per batch); "
              f"batch 1 over {len(few)} abstracts:")
        for label, runner in (("ours", backend), ("outlines", reference)):
            _timed(runner, abstracts[:2], sampling, 2)  # warm-up
            for size, texts in ((1, few), (args.batch_size, abstracts)):
                p = _profile(runner, texts, sampling, size)
                print(f"  {label:9} batch {size:>4}: {p['steps']:>5} steps, forward {p['forward_ms']:7.2f}, processors "
                      f"{p['processor_ms']:7.2f}, rest {p['rest_ms']:6.2f}, prefill {p['prefill_ms']:8.1f}")
    print(f"extractive backend (no model): {extractive_rate:.0f} abstracts/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
