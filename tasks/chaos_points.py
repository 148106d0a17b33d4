"""Kill points for stage code: `maybe_die("summarize.chunk_done")` (see storage/chaos.py).

Every storage write is already a kill point (`fs.tmp_written@<path>`, `fs.committed@<path>`);
call this only where a stage has a commit point that is not a write.
"""

from storage.chaos import KILL_ENV, maybe_die, parse_kill_spec

__all__ = ["KILL_ENV", "maybe_die", "parse_kill_spec"]
