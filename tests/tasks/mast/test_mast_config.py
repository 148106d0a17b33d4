"""configure_astroquery: the MAST server changes, the user's own astroquery settings stay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

PROBE = """
import json, os
from tasks.mast_config import configure_astroquery
configure_astroquery("http://127.0.0.1:9/")
from astroquery.mast import conf
print(json.dumps({"server": conf.server, "timeout": int(conf.timeout), "pagesize": int(conf.pagesize),
                  "home": os.environ["XDG_CONFIG_HOME"]}))
"""


def test_the_users_astroquery_settings_survive_and_the_temp_config_goes(tmp_path):
    # A fresh process: astroquery fixes its URLs at import, so this test cannot share one.
    user = tmp_path / "xdg" / "astropy"
    user.mkdir(parents=True)
    mine = "[mast]\ntimeout = 3600\npagesize = 10000\n"
    (user / "astroquery.cfg").write_text(mine)
    env = {k: v for k, v in os.environ.items() if k != "ASTROPY_CONFIG_DIR"}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (seen["server"], seen["timeout"], seen["pagesize"]) == ("http://127.0.0.1:9", 3600, 10000)
    assert seen["home"] != str(tmp_path / "xdg")  # the user's file is read, never edited
    assert (user / "astroquery.cfg").read_text() == mine
    assert not Path(seen["home"]).exists()  # removed when the process ended
