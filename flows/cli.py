"""The `hubbleclip` command line. Each stage registers its commands from flows/commands/.

Every command exits non-zero with a one-line reason on any error; set HUBBLECLIP_DEBUG=1 for
the traceback.
"""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError

from flows.commands import archive, dataset, evaluate, ingest, pipeline, summarize, train
from schemas.errors import HubbleClipError, validation_reasons

app = typer.Typer(
    name="hubbleclip",
    help="HubbleCLIP: the Hubble archive as a vision-language dataset and a fine-tuned CLIP model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in (archive, ingest, summarize, dataset, train, evaluate, pipeline):
    _module.register(app)


def one_line(text: str, limit: int = 2000) -> str:
    """A message's lines joined: cutting at the first one loses the advice most errors end with."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="hubbleclip")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("hubbleclip: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:  # noqa: BLE001 - the CLI's contract is one line, whatever failed
        if os.environ.get("HUBBLECLIP_DEBUG"):
            raise
        kind = "error" if isinstance(err, HubbleClipError) else f"error ({type(err).__name__})"
        if isinstance(err, ValidationError):  # parameters validated outside a command's own checks
            kind, message = f"invalid {err.title}", validation_reasons(err)
        else:
            message = one_line(str(err)) or type(err).__name__
        print(f"hubbleclip: {kind}: {message}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
