"""The real astroquery client against the archive serving the synthetic sky."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import requests

from tasks.archive.server import ArchiveServer

SCIENCE = dict(obs_collection="HST", dataproduct_type="image", intentType="science", dataRights="PUBLIC")


def _rows(sky: Path) -> list[dict]:
    return json.loads((sky / "caom" / "observations.json").read_text())["data"]


def test_filters_discrete_and_ranges_match_the_sky(archive: ArchiveServer, demo_sky: Path) -> None:
    from astroquery.mast import Observations

    rows = _rows(demo_sky)
    releases = sorted(r["t_obs_release"] for r in rows)
    low, high = releases[len(releases) // 4], releases[3 * len(releases) // 4]
    table = Observations.query_criteria(**SCIENCE, calib_level=[2, 3], t_obs_release=[low, high])
    expected = {str(r["obsid"]) for r in rows if r["intentType"] == "science" and r["dataproduct_type"] == "image"
                and r["dataRights"] == "PUBLIC" and r["calib_level"] in (2, 3) and low <= r["t_obs_release"] <= high}
    assert expected and {str(v) for v in table["obsid"]} == expected
    invoke = [body for method, body, status in archive.request_log if body == "/api/v0/invoke"]
    assert len(invoke) == 1

    pid = rows[0]["proposal_id"]
    some = Observations.query_criteria(obs_collection="HST", proposal_id=[pid, "99999"], instrument_name="*")
    assert {str(v) for v in some["proposal_id"]} == {pid}
    assert len(some) == sum(r["proposal_id"] == pid for r in rows)
    t_min = sorted(r["t_min"] for r in rows)[5]
    early = Observations.query_criteria(obs_collection="HST", t_min=[0, t_min])
    assert len(early) == 6


def test_counts_and_paging(archive: ArchiveServer, demo_sky: Path) -> None:
    from astroquery.mast import Observations

    rows = _rows(demo_sky)
    science = [r for r in rows if r["intentType"] == "science" and r["dataproduct_type"] == "image"
               and r["dataRights"] == "PUBLIC"]
    assert Observations.query_criteria_count(**SCIENCE) == len(science)
    assert Observations.query_criteria_count(obs_collection="HST") == len(rows)
    archive.clear_log()
    table = Observations.query_criteria(**SCIENCE, pagesize=17)
    pages = -(-len(science) // 17)
    assert pages >= 3
    assert len(table) == len(science) and len(set(table["obsid"])) == len(science)
    assert sum(path == "/api/v0/invoke" for _, path, _ in archive.request_log) == pages
    page_two = Observations.query_criteria(**SCIENCE, pagesize=17, page=2)
    assert [str(v) for v in page_two["obsid"]] == [str(r["obsid"]) for r in science[17:34]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(Observations.query_criteria(obs_collection="HST", proposal_id="1")) == 0


def test_products_and_the_preview_policy(archive: ArchiveServer, demo_sky: Path) -> None:
    from astroquery.mast import Observations

    table = Observations.query_criteria(**SCIENCE, calib_level=[2, 3])
    products = Observations.get_product_list(table[:12])
    assert set(products["obsID"].astype(str)) <= {str(v) for v in table["obsid"][:12]}
    previews = Observations.filter_products(products, productType="PREVIEW", extension="jpg")
    assert 0 < len(previews) < len(products)
    names = [str(n) for n in previews["productFilename"]]
    total = [n for n in names if "total" in n and "color" not in n]
    with_jpeg = {str(r["obsid"]) for r in table[:12] if r["jpegURL"]}
    assert len(total) == len(with_jpeg), "one combined 'total' preview per observation with a preview"
    assert any("color" in n for n in names) and any("total" not in n for n in names)
    fits = Observations.filter_products(products, productType="SCIENCE", mrp_only=True)
    assert len(fits) and all(str(n).endswith(".fits") for n in fits["productFilename"])


def test_downloads_with_content_length(archive: ArchiveServer, demo_sky: Path, tmp_path: Path) -> None:
    from astroquery.mast import Observations

    files = json.loads((demo_sky / "caom" / "files.json").read_text())
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    rows = {str(r["obsid"]): r for r in _rows(demo_sky)}
    good = next(o for o in truth["observations"] if rows[o]["jpegURL"] in files
                and o not in truth["bad_records"]["zero_byte_jpeg"] + truth["bad_records"]["corrupt_jpeg"])
    uri = rows[good]["jpegURL"]
    status, message, _ = Observations.download_file(uri, local_path=tmp_path, verbose=False)
    assert (status, message) == ("COMPLETE", None)
    local = tmp_path / uri.rsplit("/", 1)[-1]
    assert local.read_bytes() == (demo_sky / files[uri]).read_bytes()
    methods = [m for m, path, s in archive.request_log if "Download/file" in path and s == 200]
    assert methods == ["HEAD", "GET"]
    head = requests.head(f"{archive.url}/api/v0.1/Download/file", params={"uri": uri}, timeout=10)
    assert int(head.headers["Content-Length"]) == local.stat().st_size and head.headers["Content-Type"] == "image/jpeg"
    fits_uri = rows[good]["dataURL"]
    assert Observations.download_file(fits_uri, local_path=tmp_path, verbose=False)[0] == "COMPLETE"
    assert (tmp_path / fits_uri.rsplit("/", 1)[-1]).read_bytes().startswith(b"SIMPLE  =")

    missing = rows[truth["bad_records"]["preview_404"][0]]["jpegURL"]
    status, message, _ = Observations.download_file(missing, local_path=tmp_path / "m", verbose=False)
    assert status == "ERROR" and "404" in message
    zero = rows[truth["bad_records"]["zero_byte_jpeg"][0]]["jpegURL"]
    response = requests.get(f"{archive.url}/api/v0.1/Download/file", params={"uri": zero}, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Length"] == "0" and response.content == b""


def test_stsci_documents(archive: ArchiveServer, demo_sky: Path) -> None:
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    bad = truth["bad_records"]
    pid = next(p for p in truth["proposals"] if p not in bad["apt_only"] + bad["pro_only"])
    apt = requests.get(f"{archive.url}/hst-program-info/download/hst/apt/{pid}/", timeout=10)
    assert apt.status_code == 200 and apt.content == (demo_sky / "stsci" / "apt" / f"{pid}.apt").read_bytes()
    assert requests.get(f"{archive.url}/hst/phase2-public/{pid}.apt", timeout=10).content == apt.content
    pro = requests.get(f"{archive.url}/hst/phase2-public/{pid}.pro", timeout=10)
    assert pro.status_code == 200 and "iso-8859-1" in pro.headers["Content-Type"]
    catalog = requests.get(f"{archive.url}/hst/proposal-abstracts/catalog.txt", timeout=10)
    assert catalog.status_code == 200 and f"ID:         {pid}" in catalog.text
    assert requests.get(f"{archive.url}/hst/phase2-public/{bad['apt_only'][0]}.pro", timeout=10).status_code == 404
    assert requests.get(f"{archive.url}/hst-program-info/download/hst/apt/{bad['pro_only'][0]}/", timeout=10).status_code == 404
    assert requests.get(f"{archive.url}/hst-program-info/download/hst/apt/424242/", timeout=10).status_code == 404
    assert requests.get(f"{archive.url}/hst/phase2-public/..%2Fsky.json.pro", timeout=10).status_code == 404


def test_configure_swaps_content_at_runtime(archive: ArchiveServer, demo_sky: Path, tmp_path: Path) -> None:
    from astroquery.mast import Observations

    from schemas.errors import InputError

    before = Observations.query_criteria_count(obs_collection="HST")
    archive.configure(sky_dir=None)
    assert Observations.query_criteria_count(obs_collection="HST") == 0
    archive.configure(sky_dir=demo_sky)
    assert Observations.query_criteria_count(obs_collection="HST") == before
    with pytest.raises(InputError, match="sky.json"):
        archive.configure(sky_dir=tmp_path)
    assert Observations.query_criteria_count(obs_collection="HST") == before, "a failed configure changes nothing"
