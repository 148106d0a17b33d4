"""The demo's archive: the port it had last time, or a new one when that port is taken."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.demo import ARCHIVE_RECORD, _serve
from tasks.archive.sky import generate_sky


@pytest.fixture(autouse=True)
def prefect_backend() -> Iterator[None]:
    """These tests run no flow: no Prefect server for them (overrides tests/flows/conftest.py's)."""
    yield


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_taken_saved_port_gets_a_new_one(tmp_path: Path, busy_port: int) -> None:
    sky = tmp_path / "sky"
    generate_sky(sky, proposals=2, mean_observations=2.0, bad_records=False, workers=1)
    (sky / ARCHIVE_RECORD).write_text(json.dumps({"port": busy_port}))
    with _serve(sky) as server:
        port = int(server.url.rsplit(":", 1)[1])
        assert port != busy_port
        assert json.loads((sky / ARCHIVE_RECORD).read_text()) == {"port": port}


def test_the_demo_refuses_a_data_root_that_is_not_a_demos(tmp_path: Path, capsys) -> None:
    from flows.cli import main

    afile = tmp_path / "afile"
    afile.write_text("")
    real = tmp_path / "real"
    (real / "tables" / "observations").mkdir(parents=True)
    (real / "tables" / "observations" / "_manifest.json").write_text("{}")
    for data, problem in ((afile, "is a file"), (real, "already holds data that is not a demo's")):
        with pytest.raises(SystemExit) as exit_info:  # was: FileExistsError / the sky mixed into real tables
            main(["demo", "--quick", "--data", str(data)])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert f"demo --data {data} {problem}" in err, err
    assert sorted(p.name for p in real.iterdir()) == ["tables"]  # nothing written into it


def test_a_demo_root_may_be_new_empty_or_an_earlier_demos(tmp_path: Path) -> None:
    from flows.demo import SKY_DIR, check_demo_root

    check_demo_root(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_demo_root(tmp_path / "empty")
    earlier = tmp_path / "earlier"
    generate_sky(earlier / SKY_DIR, proposals=2, seed=0, bad_records=False)
    (earlier / "tables").mkdir()
    check_demo_root(earlier)
