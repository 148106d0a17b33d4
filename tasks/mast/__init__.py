"""Ingest from MAST and STScI: observations, previews and proposals, incremental and resumable.

Modules, one concept each:
- `http`: timeouts, bounded retries with backoff and jitter, rate limiting, per-thread astroquery clients.
- `observations`: count-first, window-splitting CAOM queries checked against their counts.
- `previews`: which previews count, sampling, download, validation, 512x512 processing.
- `proposals`: APT XML, `.pro` and catalog parsers; polite, cached document fetches.
- `watermark`: the last release time ingested, kept in the data root.
- `journal`: per-record outcomes written before the tables commit, so a killed run resumes.
- `stage`: `run_ingest(params, settings)`, the plain-function stage the flow wraps.

astroquery.mast is imported lazily, after `tasks.mast_config.configure_astroquery`.
"""
