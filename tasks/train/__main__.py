"""`python -m tasks.train` / `torchrun ... -m tasks.train`: the train stage without Prefect or typer.

Every TrainParams field is an option (`--batch-size 256`, `--shuffled-pairs`, `--no-resume`), so
GPU boxes that have only torch + open_clip (no Prefect) can train, one process or many:

    torchrun --nproc_per_node 8 -m tasks.train --data s3://bucket/hubbleclip --preset paper
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing

from pydantic import ValidationError

from schemas.errors import HubbleClipError, validation_reasons
from schemas.train import TrainParams


def _value_type(annotation: typing.Any) -> tuple[typing.Any, list[str] | None]:
    """(converter, choices) for a field annotation such as `int | None` or a Literal."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _value_type(args[0])
    if origin is typing.Literal:
        return str, [str(a) for a in typing.get_args(annotation)]
    return (annotation if annotation in (int, float, str) else str), None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tasks.train", description=__doc__.splitlines()[0])
    hints = typing.get_type_hints(TrainParams)
    for name, field in TrainParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = field.description or ""
        if hints[name] is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            continue
        convert, choices = _value_type(hints[name])
        parser.add_argument(flag, dest=name, type=convert, choices=choices, default=None, help=help_text)
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(level=args.pop("log_level"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch.distributed as dist

    from tasks.train import run_train

    try:
        params = TrainParams(**{k: v for k, v in args.items() if v is not None})
        result = run_train(params)
    except ValidationError as err:
        print(f"tasks.train: error: {validation_reasons(err)}", file=sys.stderr)
        return 1
    except HubbleClipError as err:
        print(f"tasks.train: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if result.digest:  # rank 0
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
