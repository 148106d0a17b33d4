"""Where everything lives under the data root. Documented in docs/architecture.md."""

from __future__ import annotations

from dataclasses import dataclass

from storage.fs import join


@dataclass(frozen=True)
class DataLayout:
    root: str

    @property
    def tables(self) -> str:
        """Stage tables: tables/<name>/ with data files and _manifest.json."""
        return join(self.root, "tables")

    def table(self, name: str) -> str:
        return join(self.tables, name)

    @property
    def images(self) -> str:
        """Content-addressed 512x512 previews: images/<sha[:2]>/<sha>.jpg."""
        return join(self.root, "images")

    @property
    def datasets(self) -> str:
        """Immutable training-set versions: datasets/<version>/ plus datasets/latest."""
        return join(self.root, "datasets")

    @property
    def runs(self) -> str:
        """Training runs: runs/<run>/ with checkpoints and metrics."""
        return join(self.root, "runs")

    @property
    def reports(self) -> str:
        return join(self.root, "reports")

    @property
    def index(self) -> str:
        """Search indexes: index/<dataset version>-<checkpoint hash>/."""
        return join(self.root, "index")

    @property
    def state(self) -> str:
        """Small mutable state: the ingest watermark, locks."""
        return join(self.root, "state")

    @property
    def cache(self) -> str:
        """Raw-response caches (proposal documents) keyed by URL hash."""
        return join(self.root, "cache")
