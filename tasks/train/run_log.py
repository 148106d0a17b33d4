"""Metrics of a run: runs/<run>/metrics.jsonl, TensorBoard event files, optionally Weights & Biases.

One JSON object per line: {"step", "split": "train"|"val", "time", ...metrics}. On a local data
root the lines are appended and flushed as they come (a crash loses nothing); on an object
store (no appends) the file is rewritten atomically at every checkpoint. A resumed run first
drops the lines logged after its checkpoint's step, so the file reads as one clean run.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from storage.fs import atomic_write_bytes, exists, join, open_fs, read_text

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl (empty if none)."""
    url = join(run_dir, METRICS_FILE)
    if not exists(url):
        return []
    return [json.loads(line) for line in read_text(url).splitlines() if line.strip()]


class MetricsLog:
    def __init__(self, run_dir: str, *, resume_step: int = 0, tensorboard: bool = True, wandb: bool = False,
                 run_name: str = "", config: dict[str, Any] | None = None):
        self.url = join(run_dir, METRICS_FILE)
        fs, path = open_fs(self.url)
        self._local = isinstance(fs, LocalFileSystem)
        self._fs, self._path = fs, path
        kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step]
        self._records: list[dict[str, Any]] = kept
        self._write_all()
        self._handle = fs.open(path, "a") if self._local else None
        self._tb = self._open_tensorboard(run_dir, path) if tensorboard else None
        self._wandb = self._open_wandb(run_name, config or {}) if wandb else None

    def _write_all(self) -> None:
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self._records)
        atomic_write_bytes(self.url, text.encode())

    def _open_tensorboard(self, run_dir: str, metrics_path: str):
        if not self._local:
            log.info("TensorBoard logs are written only for local data roots; metrics.jsonl has everything")
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            log.info("tensorboard is not installed: metrics go to metrics.jsonl only")
            return None
        _fs, tb_path = open_fs(join(run_dir, TENSORBOARD_DIR))
        return SummaryWriter(log_dir=tb_path)

    @staticmethod
    def _open_wandb(run_name: str, config: dict[str, Any]):
        try:
            import wandb  # optional: pip install wandb
        except ImportError:
            log.warning("wandb=True but the wandb package is not installed; skipping Weights & Biases")
            return None
        return wandb.init(project="hubbleclip", name=run_name, config=config, resume="allow", id=run_name)

    def log(self, step: int, record: dict[str, Any]) -> None:
        row = {"step": int(step), "time": time.time(), **record}
        self._records.append(row)
        if self._handle is not None:
            self._handle.write(json.dumps(row, sort_keys=True) + "\n")
            self._handle.flush()
        split = record.get("split", "train")
        numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(f"{split}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in numbers.items()}, step=step)

    def flush(self) -> None:
        """Make everything logged so far durable (a rewrite on object stores)."""
        if self._handle is None:
            self._write_all()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self.flush()
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    @property
    def records(self) -> list[dict[str, Any]]:
        return list(self._records)
