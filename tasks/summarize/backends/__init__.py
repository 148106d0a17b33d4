"""Summarizer backends behind one interface (base.SummarizerBackend), chosen by name."""

from tasks.summarize.backends.base import (
    BACKENDS,
    RawOutput,
    SummarizerBackend,
    create_backend,
    list_backends,
    resolve_backend,
)

__all__ = ["BACKENDS", "RawOutput", "SummarizerBackend", "create_backend", "list_backends", "resolve_backend"]
