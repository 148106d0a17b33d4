"""Point astroquery at a MAST server by configuration, the way a user would.

astroquery 0.4.11 computes its endpoint URLs as class attributes when `astroquery.mast` is first
imported, from `conf.server`, which it reads from `$XDG_CONFIG_HOME/astropy/astroquery.cfg`
(mast-access.md 4.6). So the configuration must be in place before that import, and a process
can talk to one MAST server only. Every module that uses astroquery.mast imports it lazily, after
calling `configure_astroquery`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from schemas.errors import InputError

_CONFIG_TEMPLATE = "[mast]\nserver = {url}\n"


def _current_server() -> str:
    from astroquery.mast import conf

    return str(conf.server).rstrip("/")


def configure_astroquery(mast_url: str, config_home: str | Path | None = None) -> None:
    """Make astroquery.mast use `mast_url`; idempotent; refuses to switch servers mid-process."""
    mast_url = mast_url.rstrip("/")
    if "astroquery.mast" in sys.modules:
        current = _current_server()
        if current != mast_url:
            raise InputError(
                f"astroquery.mast is already bound to {current} in this process; cannot switch to "
                f"{mast_url} (astroquery fixes its URLs at import; run a new process)"
            )
        return
    if config_home is None:
        config_home = tempfile.mkdtemp(prefix="hubbleclip-astropy-")
    config_dir = Path(config_home) / "astropy"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "astroquery.cfg").write_text(_CONFIG_TEMPLATE.format(url=mast_url))
    os.environ["XDG_CONFIG_HOME"] = str(config_home)
    # astropy caches parsed config files per package; drop a cached astroquery one, if any.
    try:
        from astropy.config import configuration

        configuration._cfgobjs.pop("astroquery", None)
    except (ImportError, AttributeError):  # pragma: no cover - older astropy layouts
        pass
    current = _current_server()
    if current != mast_url:
        raise InputError(f"astroquery did not take the configured MAST server {mast_url} (it uses {current})")
