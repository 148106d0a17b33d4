"""`python -m tasks.mast PARAMS_JSON`: run the ingest stage without Prefect or the CLI.

PARAMS_JSON is an IngestParams object as JSON (a file path or the JSON text itself). Prints the
StageResult as JSON. Used where the lighter entry point matters (kill-and-resume tests, GPU boxes).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from schemas.ingest import IngestParams
from tasks.mast.stage import run_ingest
from tasks.secrets import install_redaction


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tasks.mast PARAMS_JSON (a file or the JSON text)", file=sys.stderr)
        return 2
    # JSON text starts with '{'; anything else is a path (asking the file system about a long
    # JSON text fails with "File name too long").
    try:
        text = args[0] if args[0].lstrip().startswith("{") else Path(args[0]).read_text()
    except OSError as err:
        print(f"cannot read the params file {args[0]!r}: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    install_redaction()
    result = run_ingest(IngestParams.model_validate_json(text))
    print(result.model_dump_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
