"""Point astroquery at a MAST server by configuration, the way a user would.

astroquery 0.4.11 computes its endpoint URLs as class attributes when `astroquery.mast` is first
imported, from `conf.server`, which it reads from `$XDG_CONFIG_HOME/astropy/astroquery.cfg`
(mast-access.md 4.6). So the configuration must be in place before that import, and a process
can talk to one MAST server only. Every module that uses astroquery.mast imports it lazily, after
calling `configure_astroquery`.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from schemas.errors import InputError

log = logging.getLogger(__name__)


def _current_server() -> str:
    from astroquery.mast import conf

    return str(conf.server).rstrip("/")


def _user_config_dir() -> Path | None:
    """Where astropy reads the user's own config files (astroquery.cfg among them), if anywhere."""
    try:
        try:
            from astropy.config import get_config_dir_path

            return Path(get_config_dir_path("astropy", ensure_exists=False))
        except ImportError:  # pragma: no cover - astropy < 6.1
            from astropy.config import get_config_dir

            return Path(get_config_dir("astropy"))
    except (OSError, RuntimeError, KeyError):  # no home directory to look in
        return None


def _copy_user_config(user_dir: Path | None, config_dir: Path) -> None:
    """The user's config files, so that moving the config directory loses none of their settings."""
    if user_dir is None or not user_dir.is_dir() or user_dir.resolve() == config_dir.resolve():
        return
    for found in user_dir.glob("*.cfg"):
        if found.is_file():
            shutil.copyfile(found, config_dir / found.name)


def _set_server(cfg_path: Path, mast_url: str) -> None:
    """Set [mast] server in astroquery.cfg, keeping every other setting in it."""
    from astropy.extern.configobj import configobj

    try:
        cfg = configobj.ConfigObj(str(cfg_path), interpolation=False)
    except (configobj.ConfigObjError, OSError) as err:
        log.warning("ignoring the unreadable astroquery config %s: %s", cfg_path, err)
        cfg_path.unlink(missing_ok=True)
        cfg = configobj.ConfigObj(str(cfg_path), interpolation=False)
    if not isinstance(cfg.get("mast"), dict):
        cfg["mast"] = {}
    cfg["mast"]["server"] = mast_url
    cfg.write()


def configure_astroquery(mast_url: str, config_home: str | Path | None = None) -> None:
    """Make astroquery.mast use `mast_url`; idempotent; refuses to switch servers mid-process.

    The configuration goes in `config_home` (default: a temporary directory, removed when the
    process exits), starting from a copy of the user's own config files, so their astroquery
    settings ([mast] timeout, pagesize...) still apply; only the server is changed.
    """
    mast_url = mast_url.rstrip("/")
    if "astroquery.mast" in sys.modules:
        current = _current_server()
        if current != mast_url:
            raise InputError(
                f"astroquery.mast is already bound to {current} in this process; cannot switch to "
                f"{mast_url} (astroquery fixes its URLs at import; run a new process)"
            )
        return
    user_dir = _user_config_dir()  # before XDG_CONFIG_HOME moves it
    if config_home is None:
        config_home = tempfile.mkdtemp(prefix="hubbleclip-astropy-")
        atexit.register(shutil.rmtree, config_home, ignore_errors=True)
    config_dir = Path(config_home) / "astropy"
    config_dir.mkdir(parents=True, exist_ok=True)
    _copy_user_config(user_dir, config_dir)
    _set_server(config_dir / "astroquery.cfg", mast_url)
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
