"""The `hubbleclip` command line. Each stage registers its commands from flows/commands/.

Every command exits non-zero with a one-line reason on any error; set HUBBLECLIP_DEBUG=1 for
the traceback (and for Prefect's tracebacks of failed tasks and flows on the console).
"""

from __future__ import annotations

import logging
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


# Commands that run Prefect flows in this process (any command given --flow does too).
FLOW_COMMANDS = frozenset({"pipeline", "rebuild", "demo"})


class _ConsoleWithoutTraceback(logging.Formatter):
    """Formats as `inner` does, less the traceback: Prefect logs each failed task's and flow's
    traceback to the console, hundreds of lines before the CLI's one-line reason. Only the
    console's formatter is wrapped, so the Prefect API (the UI) still receives every traceback."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_flow_tracebacks() -> int:
    """Wrap the formatter of Prefect's console handler; returns how many were wrapped."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # now, not at the first flow: a later setup only adjusts these handlers

    wrapped = 0
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _ConsoleWithoutTraceback):
            handler.setFormatter(_ConsoleWithoutTraceback(handler.formatter or logging.Formatter()))
            wrapped += 1
    return wrapped


def one_line(text: str, limit: int = 2000) -> str:
    """A message's lines joined: cutting at the first one loses the advice most errors end with."""
    joined = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not os.environ.get("HUBBLECLIP_DEBUG") and args and (args[0] in FLOW_COMMANDS or "--flow" in args):
        quiet_flow_tracebacks()
    try:
        app(args=args, prog_name="hubbleclip")
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
