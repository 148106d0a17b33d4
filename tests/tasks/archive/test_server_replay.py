"""Replay: each recorded MAST answer in ../shared/fixtures/mast comes back through astroquery as recorded."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import requests

from tasks.archive.server import ArchiveServer


@pytest.fixture
def recordings(shared_dir: Path, archive: ArchiveServer) -> Path:
    mast = shared_dir / "fixtures" / "mast"
    archive.configure(replay_dir=mast)
    return mast


def assert_table_equals_recording(table, answer: dict) -> None:
    rows = answer["data"]
    assert len(table) == len(rows)
    for field in answer["fields"]:
        name = field["name"]
        if name == "_selected_":
            assert name not in table.colnames
            continue
        column = table[name]
        for i, expected in enumerate(rows):
            value = expected.get(name)
            cell = column[i]
            if value is None:
                assert np.ma.is_masked(cell), (name, i)
            elif field["type"] in ("float", "double") or isinstance(value, float):
                assert math.isclose(float(cell), float(value), rel_tol=1e-12), (name, i)
            else:
                assert str(cell) == str(value), (name, i)


def test_observations_replay_equal_to_the_recording(recordings: Path) -> None:
    from astroquery.mast import Observations

    recorded = json.loads((recordings / "advSearch.json").read_text())
    table = Observations.query_criteria(obs_collection="HST", proposal_id="8880")
    assert_table_equals_recording(table, recorded)
    # intentType and dataRights are columns the 2019 recording lacks: not applied, the recording stands
    same = Observations.query_criteria(obs_collection="HST", intentType="science", dataRights="PUBLIC")
    assert_table_equals_recording(same, recorded)
    paged = Observations.query_criteria(obs_collection="HST", proposal_id="8880", pagesize=2)
    assert_table_equals_recording(paged, recorded)
    times = sorted(r["t_min"] for r in recorded["data"])
    narrow = Observations.query_criteria(obs_collection="HST", t_min=[times[0], times[1]])
    assert len(narrow) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(Observations.query_criteria(obs_collection="HST", proposal_id="5371")) == 0


def test_counts_products_and_columns_config_replay(recordings: Path, archive: ArchiveServer, tmp_path: Path) -> None:
    from astroquery.mast import Observations

    counts = json.loads((recordings / "countsResp.json").read_text())
    assert Observations.query_criteria_count(obs_collection="HST", proposal_id="8880") == counts["data"][0]["Column1"]
    products = json.loads((recordings / "products.json").read_text())
    table = Observations.get_product_list("2003738726")
    assert_table_equals_recording(table, products)
    answer = requests.post(f"{archive.url}/portal/Mashup/Mashup.asmx/columnsconfig",
                           data="colConfigId=Mast.Caom.Cone",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert answer.json() == json.loads((recordings / "columnsconfig.json").read_text())
    uri = products["data"][0]["dataURI"]
    assert Observations.download_file(uri, local_path=tmp_path, verbose=False)[0] == "COMPLETE"
    status, message, _ = Observations.download_file("mast:HST/product/not_recorded.fits", local_path=tmp_path,
                                                    verbose=False)
    assert status == "ERROR" and "404" in message


def test_replay_documents(shared_dir: Path, archive: ArchiveServer) -> None:
    archive.configure(replay_dir=shared_dir / "fixtures" / "proposals")
    apt = requests.get(f"{archive.url}/hst-program-info/download/hst/apt/13012/", timeout=10)
    assert apt.status_code == 200
    assert apt.content == (shared_dir / "fixtures" / "proposals" / "13012_phase2.apt").read_bytes()
    assert requests.get(f"{archive.url}/hst/phase2-public/13012.pro", timeout=10).status_code == 404
    archive.configure(replay_dir=shared_dir / "fixtures" / "mast")  # documents from the sibling proposals/
    assert requests.get(f"{archive.url}/hst/phase2-public/13012.apt", timeout=10).content == apt.content


def test_bad_replay_directories_are_refused(tmp_path: Path, archive: ArchiveServer) -> None:
    from schemas.errors import InputError

    with pytest.raises(InputError, match="holds none of"):
        archive.configure(replay_dir=tmp_path)
    (tmp_path / "advSearch.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        archive.configure(replay_dir=tmp_path)
    (tmp_path / "advSearch.json").write_text('{"status": "COMPLETE"}')
    with pytest.raises(InputError, match="'fields' and 'data'"):
        archive.configure(replay_dir=tmp_path)
