"""`python -m tests.chaos.stage_process STAGE PARAMS_JSON [--point DOTTED.NAME ...]`: one stage in a
child process, as the kill tests need it (a process that can be SIGKILLed at a chosen point).

STAGE is ingest, summarize, dataset, train or evaluate (the kill tests use the stages' own entry
points, `python -m tasks.mast` and `python -m tasks.train`, where there is one). The stage's own
`run_*` function runs with the params model validated from PARAMS_JSON, and the StageResult is
printed as JSON. Logging goes to stderr at DEBUG, through the secret filter, so tests can grep it.

`--point tasks.dataset.shards._AtomicFile.commit` wraps that function or method so that it calls
`maybe_die("call", "<dotted name>")` before running and `maybe_die("return", ...)` after: a kill
point inside a stage whose code has none, chosen by HUBBLECLIP_CHAOS_KILL_AT
(`call@tasks.dataset.shards._AtomicFile.commit#2`). `--set module.NAME=INT` overrides a module
constant (e.g. a chunk size, so a small input still has several commit points).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from typing import Any

from storage.chaos import maybe_die
from tasks.secrets import install_redaction

STAGES = {
    "ingest": ("schemas.ingest:IngestParams", "tasks.mast.stage:run_ingest"),
    "summarize": ("schemas.summary:SummarizeParams", "tasks.summarize.stage:run_summarize"),
    "dataset": ("schemas.dataset:BuildDatasetParams", "tasks.dataset.stage:run_build_dataset"),
    "train": ("schemas.train:TrainParams", "tasks.train.stage:run_train"),
    "evaluate": ("schemas.evaluate:EvaluateParams", "tasks.evaluate.stage:run_evaluate"),
}


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _owner(dotted: str) -> tuple[Any, str]:
    """(object holding the attribute, attribute name) for 'pkg.module.Class.method' or 'pkg.module.func'."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:-1]:
            target = getattr(target, name)
        return target, parts[-1]
    raise SystemExit(f"cannot resolve {dotted!r}")


def install_point(dotted: str) -> None:
    owner, name = _owner(dotted)
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        maybe_die("call", dotted)
        result = original(*args, **kwargs)
        maybe_die("return", dotted)
        return result

    setattr(owner, name, wrapped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.stage_process")
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("params", help="the stage's params model as JSON")
    parser.add_argument("--point", action="append", default=[], help="dotted function to make a kill point")
    parser.add_argument("--set", action="append", default=[], help="module.NAME=INT constant override")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    install_redaction()
    for item in args.set:
        dotted, _, value = item.partition("=")
        owner, name = _owner(dotted)
        setattr(owner, name, int(value))
    for dotted in args.point:
        install_point(dotted)
    params_ref, run_ref = STAGES[args.stage]
    params = _resolve(params_ref).model_validate_json(args.params)
    result = _resolve(run_ref)(params)
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
