"""The summarize stage: proposal abstracts -> short object and use-case lists -> CLIP captions.

Plain functions, importable without Prefect: `run_summarize(params)` is the stage,
`summarize_texts(abstracts, params)` the same work for text in memory (the CLI's summarize-text).
"""

from tasks.summarize.backends import create_backend, list_backends
from tasks.summarize.stage import run_summarize, summarize_texts

__all__ = ["create_backend", "list_backends", "run_summarize", "summarize_texts"]
