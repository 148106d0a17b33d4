"""What a killed extend_sky or generate_sky --overwrite leaves behind is settled by the next call."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import tasks.archive.sky as sky_module
from schemas.errors import InputError
from tasks.archive.sky import extend_sky, generate_sky, load_sky_info
from tasks.archive.sky_leftovers import recorded_catalog_body

REPO = Path(__file__).resolve().parents[3]
SMALL = dict(mean_observations=2.0, bad_records=False, workers=1)
INDEX_FILES = ["caom/observations.json", "caom/products.json", "caom/files.json", "caom/columnsconfig.json",
               "stsci/catalog.txt", "ground_truth.json", "sky.json"]


class Killed(BaseException):
    """Stands in for a kill: nothing in extend_sky catches it."""


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_sky(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("leftovers") / "base"
    generate_sky(root, proposals=5, seed=1, **SMALL)
    return root


@pytest.fixture()
def uninterrupted(base_sky: Path, tmp_path: Path) -> Path:
    """The base sky extended once with (proposals=3, seed=1), nothing killed."""
    root = tmp_path / "uninterrupted"
    shutil.copytree(base_sky, root)
    extend_sky(root, proposals=3, seed=1, workers=1)
    return root


def _interrupt_extension_at(monkeypatch: pytest.MonkeyPatch, root: Path, index_file: str, **options: int) -> None:
    """Run extend_sky on `root` until it is about to write `index_file`, and stop it there."""
    write = sky_module.atomic_write_bytes

    def write_until(path: str, data: bytes) -> None:
        if path == str(root / index_file):
            raise Killed(path)
        write(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(sky_module, "atomic_write_bytes", write_until)
        with pytest.raises(Killed):
            extend_sky(root, workers=1, **options)


@pytest.mark.parametrize("index_file", INDEX_FILES[1:])
def test_rerun_after_an_interrupted_extension_gives_the_uninterrupted_sky(
        monkeypatch: pytest.MonkeyPatch, base_sky: Path, uninterrupted: Path, tmp_path: Path, index_file: str) -> None:
    root = tmp_path / "rerun"
    shutil.copytree(base_sky, root)
    _interrupt_extension_at(monkeypatch, root, index_file, proposals=3, seed=1)
    info = extend_sky(root, proposals=3, seed=1, workers=1)
    assert tree_bytes(root) == tree_bytes(uninterrupted)
    rows = json.loads((root / "caom" / "observations.json").read_bytes())["data"]
    products = json.loads((root / "caom" / "products.json").read_bytes())["data"]
    assert not [obsid for obsid, n in Counter(r["obsid"] for r in rows).items() if n > 1]
    assert len({p["dataURI"] for p in products}) == len(products)
    assert info.proposals == 8 and len(info.extensions) == 1


def test_rerun_with_other_options_drops_everything_the_killed_extension_wrote(
        monkeypatch: pytest.MonkeyPatch, base_sky: Path, uninterrupted: Path, tmp_path: Path) -> None:
    root = tmp_path / "rerun"
    shutil.copytree(base_sky, root)
    # More proposals, another seed: previews, documents, rows and catalog records of other ids.
    _interrupt_extension_at(monkeypatch, root, "sky.json", proposals=6, seed=7)
    assert tree_bytes(root) != tree_bytes(base_sky)
    extend_sky(root, proposals=3, seed=1, workers=1)
    assert tree_bytes(root) == tree_bytes(uninterrupted)


@pytest.mark.parametrize("kill_at", ["fs.committed@*/caom/observations.json", "fs.tmp_written@*/sky.json"])
def test_rerun_after_a_sigkilled_extension_gives_the_uninterrupted_sky(
        base_sky: Path, uninterrupted: Path, tmp_path: Path, kill_at: str) -> None:
    root = tmp_path / "rerun"
    shutil.copytree(base_sky, root)
    script = f"from tasks.archive.sky import extend_sky; extend_sky({str(root)!r}, proposals=3, seed=1, workers=1)"
    env = {**os.environ, "HUBBLECLIP_CHAOS_KILL_AT": kill_at}
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    extend_sky(root, proposals=3, seed=1, workers=1)
    assert tree_bytes(root) == tree_bytes(uninterrupted)


def test_catalog_body_keeps_the_records_before_the_next_id(base_sky: Path) -> None:
    catalog = (base_sky / "stsci" / "catalog.txt").read_bytes()
    next_pid = json.loads((base_sky / "sky.json").read_bytes())["state"]["next_proposal_id"]
    body = recorded_catalog_body(catalog, next_pid)
    assert body + b"-" * 80 + b"\n" == catalog
    ids = sorted(int(pid) for pid in json.loads((base_sky / "ground_truth.json").read_bytes())["proposals"])
    kept = recorded_catalog_body(catalog, ids[-1]).decode()
    assert f"ID:         {ids[-1]}" not in kept and f"ID:         {ids[-2]}" in kept
    assert kept.endswith("\n\n") and catalog.decode().startswith(kept)


# ---------------------------------------------------------------- generate_sky --overwrite


def test_overwrite_failing_mid_swap_keeps_the_old_sky(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "sky"
    generate_sky(out, proposals=2, **SMALL)
    before = tree_bytes(out)
    replace = os.replace

    def refuse_staging(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        if Path(src).name.startswith(".sky.tmp-"):
            raise OSError("disk gone")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_staging)
    with pytest.raises(OSError, match="disk gone"):
        generate_sky(out, proposals=3, overwrite=True, **SMALL)
    monkeypatch.undo()
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sky"]


def test_a_sky_left_aside_by_a_kill_between_the_renames_goes_back(tmp_path: Path) -> None:
    out = tmp_path / "sky"
    generate_sky(out, proposals=2, **SMALL)
    before = tree_bytes(out)
    os.replace(out, tmp_path / ".sky.old")  # the state a kill between the two renames leaves
    with pytest.raises(InputError, match="already holds a sky"):
        generate_sky(out, proposals=3, **SMALL)
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sky"]
    generate_sky(out, proposals=3, overwrite=True, **SMALL)
    assert load_sky_info(out).proposals == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sky"]


def test_a_stale_aside_copy_is_deleted_by_the_next_call(tmp_path: Path) -> None:
    out = tmp_path / "sky"
    generate_sky(out, proposals=2, **SMALL)
    shutil.copytree(out / "caom", tmp_path / ".sky.old" / "caom")  # killed while deleting the old copy
    with pytest.raises(InputError, match="already holds a sky"):
        generate_sky(out, proposals=3, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sky"]
    assert load_sky_info(out).proposals == 2
