"""The synthetic sky generator: determinism, ground truth, defects, extension, option checks."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from schemas.errors import InputError
from schemas.vocabulary import CURATED_CLASSES
from tasks.archive.classes import CLASS_BY_NAME, class_mentions
from tasks.archive.plan import plan_sky
from tasks.archive.sky import extend_sky, generate_sky, load_sky_info

SMALL = dict(mean_observations=2.0, bad_records=False, workers=1)


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def test_same_seed_same_bytes_and_another_seed_another_sky(tmp_path: Path) -> None:
    a = generate_sky(tmp_path / "a", proposals=6, seed=5, **SMALL)
    b = generate_sky(tmp_path / "b", proposals=6, seed=5, **SMALL)
    generate_sky(tmp_path / "c", proposals=6, seed=6, **SMALL)
    assert a.previews > 0
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")
    rows_a = json.loads((tmp_path / "a" / "caom" / "observations.json").read_text())["data"]
    rows_c = json.loads((tmp_path / "c" / "caom" / "observations.json").read_text())["data"]
    assert [r["obs_title"] for r in rows_a] != [r["obs_title"] for r in rows_c]
    assert b.model_dump(exclude={"sky_dir", "seconds"}) == a.model_dump(exclude={"sky_dir", "seconds"})
    assert not list(tmp_path.glob(".*tmp-*")), "the staging directory was not renamed into place"


def test_ground_truth_matches_the_archive_rows(demo_sky: Path) -> None:
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    rows = json.loads((demo_sky / "caom" / "observations.json").read_text())["data"]
    assert len(truth["proposals"]) == 25
    for entry in truth["proposals"].values():
        assert entry["classes"] and all(c in CURATED_CLASSES for c in entry["classes"])
        assert isinstance(entry["cycle"], int) and 14 <= entry["cycle"] <= 19
    science = {str(r["obsid"]) for r in rows if r["intentType"] == "science" and r["dataproduct_type"] == "image"
               and r["dataRights"] == "PUBLIC" and r["calib_level"] >= 2}
    assert set(truth["observations"]) == science
    for entry in truth["observations"].values():
        assert set(entry["classes"]) <= set(truth["proposals"][entry["proposal_id"]]["classes"])
    bad = truth["bad_records"]
    for kind in ("corrupt_jpeg", "zero_byte_jpeg", "empty_abstract", "no_observations", "no_preview",
                 "non_ascii", "apt_only", "pro_only", "preview_404"):
        assert len(bad[kind]) == 1, kind
    assert bad["no_observations"][0] not in {r["proposal_id"] for r in rows}
    by_obsid = {str(r["obsid"]): r for r in rows}
    assert by_obsid[bad["no_preview"][0]]["jpegURL"] is None
    info = load_sky_info(demo_sky)
    assert info.proposals == 25 and info.observations == len(rows)


def test_metadata_looks_like_mast(demo_sky: Path) -> None:
    rows = json.loads((demo_sky / "caom" / "observations.json").read_text())["data"]
    for row in rows:
        assert re.fullmatch(r"\d{10}", str(row["obsid"]))
        assert re.fullmatch(r"[A-Z0-9]{9}", row["obs_id"])
        assert row["instrument_name"] in ("ACS/WFC", "ACS/HRC", "ACS/SBC", "WFC3/UVIS", "WFC3/IR", "WFPC2", "STIS/CCD")
        assert row["obs_collection"] == "HST" and isinstance(row["proposal_id"], str)
        assert row["t_min"] < row["t_max"] < row["t_obs_release"]
        assert row["jpegURL"] is None or re.fullmatch(r"mast:HST/product/[a-z0-9_]+\.jpg", row["jpegURL"])
    assert len({r["obsid"] for r in rows}) == len(rows) and len({r["obs_id"] for r in rows}) == len(rows)
    by_cycle: dict[int, list[float]] = {}
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    for row in rows:
        by_cycle.setdefault(truth["proposals"][row["proposal_id"]]["cycle"], []).append(row["t_obs_release"])
    cycles = sorted(by_cycle)
    for early, late in zip(cycles, cycles[1:], strict=False):
        assert max(by_cycle[early]) < min(by_cycle[late]), "releases must rise with cycle"
    products = json.loads((demo_sky / "caom" / "products.json").read_text())["data"]
    names = [p["productFilename"] for p in products if p["productType"] == "PREVIEW"]
    assert any("_color" in n for n in names) and any("total" not in n for n in names)
    assert any(p["productType"] == "SCIENCE" and p["productFilename"].endswith(".fits") for p in products)


def test_previews_decode_with_instrument_sizes_and_the_bad_ones_are_bad(demo_sky: Path) -> None:
    truth = json.loads((demo_sky / "ground_truth.json").read_text())
    files = json.loads((demo_sky / "caom" / "files.json").read_text())
    rows = {str(r["obsid"]): r for r in json.loads((demo_sky / "caom" / "observations.json").read_text())["data"]}
    bad = truth["bad_records"]
    shapes = set()
    for obsid in truth["observations"]:
        uri = rows[obsid]["jpegURL"]
        if obsid in bad["no_preview"]:
            assert uri is None
            continue
        if obsid in bad["preview_404"]:
            assert uri not in files
            continue
        data = (demo_sky / files[uri]).read_bytes()
        if obsid in bad["zero_byte_jpeg"]:
            assert data == b""
        elif obsid in bad["corrupt_jpeg"]:
            with pytest.raises(OSError):
                Image.open(io.BytesIO(data)).load()
        else:
            image = Image.open(io.BytesIO(data))
            image.load()
            assert 300 <= image.width <= 800 and 300 <= image.height <= 800
            shapes.add((image.width, image.height))
    assert len(shapes) > 10


def test_plan_covers_many_classes_and_abstracts_name_their_classes() -> None:
    plan = plan_sky(proposals=300, seed=11, cycles=[20, 21, 22], first_proposal_id=0, first_obsid=2_005_000_000,
                    bad_records=True, mean_observations=3.0, max_observations=20, two_class_fraction=0.3)
    classes = {spec.name for p in plan.proposals for spec in p.classes}
    assert len(classes) >= 12
    named = literal = total = 0
    for proposal in plan.proposals:
        text = proposal.doc.abstract.lower()
        if not text:
            continue
        total += 1
        named += any(m in text for spec in proposal.classes for m in class_mentions(spec))
        literal += any(spec.name.lower() in text or spec.singular.lower() in text for spec in proposal.classes)
    assert named / total >= 0.98
    assert literal / total >= 0.85
    abstracts = [p.doc.abstract for p in plan.proposals if p.doc.abstract]
    assert len(set(abstracts)) == len(abstracts)
    assert any("(PSF)" in a or "(SED" in a for a in abstracts), "distractor acronyms"
    assert all(CLASS_BY_NAME[s.name] is s for p in plan.proposals for s in p.classes)


def test_extend_adds_a_later_cycle_deterministically(tmp_path: Path) -> None:
    base = tmp_path / "base"
    info = generate_sky(base, proposals=5, seed=1, **SMALL)
    shutil.copytree(base, tmp_path / "twin")
    rows_before = json.loads((base / "caom" / "observations.json").read_text())["data"]
    extended = extend_sky(base, proposals=4, seed=9, workers=1)
    extend_sky(tmp_path / "twin", proposals=4, seed=9, workers=1)
    assert tree_digest(base) == tree_digest(tmp_path / "twin")
    assert extended.cycles == [*info.cycles, max(info.cycles) + 1]
    assert extended.proposals == 9 and extended.extensions == [{"cycle": max(info.cycles) + 1, "proposals": 4, "seed": 9}]
    rows = json.loads((base / "caom" / "observations.json").read_text())["data"]
    new = rows[len(rows_before):]
    assert new and rows[: len(rows_before)] == rows_before
    assert min(r["t_obs_release"] for r in new) > max(r["t_obs_release"] for r in rows_before)
    assert len({r["obsid"] for r in rows}) == len(rows)
    truth = json.loads((base / "ground_truth.json").read_text())
    assert len(truth["proposals"]) == 9
    catalog = (base / "stsci" / "catalog.txt").read_text()
    assert all(f"ID:         {r['proposal_id']}" in catalog for r in new)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"proposals": 0}, "proposals"),
        ({"proposals": 200_000}, "proposals"),
        ({"cycles": 0}, "cycles"),
        ({"first_cycle": 39, "cycles": 5}, "first_cycle"),
        ({"workers": 0}, "workers"),
        ({"seed": -1}, "seed"),
        ({"proposals": 5}, "bad_records"),
        ({"mean_observations": 30.0}, "mean_observations"),
        ({"two_class_fraction": 1.5}, "two_class_fraction"),
    ],
)
def test_out_of_range_options_are_refused_clearly(tmp_path: Path, options: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        generate_sky(tmp_path / "sky", **options)
    assert not (tmp_path / "sky").exists()


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty directory"):
        generate_sky(tmp_path / "stuff", proposals=2, **SMALL)
    assert (tmp_path / "stuff" / "notes.txt").read_text() == "mine"
    generate_sky(tmp_path / "sky", proposals=2, **SMALL)
    with pytest.raises(InputError, match="already holds a sky"):
        generate_sky(tmp_path / "sky", proposals=2, **SMALL)
    generate_sky(tmp_path / "sky", proposals=3, overwrite=True, **SMALL)
    assert load_sky_info(tmp_path / "sky").proposals == 3
    with pytest.raises(InputError, match="sky.json"):
        extend_sky(tmp_path / "stuff", proposals=2)
