"""The local MAST/STScI-compatible archive and its synthetic sky.

- sky.py: `generate_sky` / `extend_sky` write a deterministic HST-like archive to a directory
  (plan.py plans it, render.py draws the previews, text.py writes abstracts, documents.py the
  APT / .pro / catalog files).
- server.py: `ArchiveServer` serves a sky (or recorded MAST answers, replay.py) over HTTP the way
  MAST and STScI do, with fault injection (faults.py).

Kept import-light: rendering workers import only what they need.
"""
