"""run_ingest against the local archive, through the real astroquery: quarantine, faults, refresh."""

from __future__ import annotations

import shutil
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from schemas.errors import InputError, RemoteError
from storage import DataLayout, ImageStore
from tasks.archive.server import FaultConfig
from tasks.mast.stage import run_ingest
from tasks.mast.watermark import read_watermark
from tests.tasks.mast.conftest import ground_truth, ingest_params, snapshot

# Defects the ingest must refuse, and the quarantine (record prefix, reason) each one gets.
REFUSED = {
    "empty_abstract": ("proposal", "empty_abstract"),
    "no_observations": ("proposal", "no_observations"),
    "corrupt_jpeg": ("preview", "decode_error"),
    "zero_byte_jpeg": ("preview", "decode_error"),
    "no_preview": ("preview", "no_preview"),
    "preview_404": ("preview", "http_404"),
}


def downloads(log: list[tuple[str, str, int]]) -> list[str]:
    """The mast: URIs asked of the Download endpoint (astroquery sends HEAD, then GET), in order."""
    out = []
    for method, path, _ in log:
        parts = urlsplit(path)
        if method in ("HEAD", "GET") and parts.path == "/api/v0.1/Download/file":
            out += parse_qs(parts.query).get("uri", [])
    return out


def test_every_bad_record_is_quarantined_with_its_reason(reference_ingest, demo_sky):
    truth = ground_truth(demo_sky)
    tables = snapshot(reference_ingest)
    quarantined = {(r["record_id"], r["reason"]) for r in tables["quarantine"]}
    expected = {(f"{prefix}/{ident}", reason) for kind, (prefix, reason) in REFUSED.items()
                for ident in truth["bad_records"][kind]}
    assert expected and expected == quarantined  # every refusal, and nothing else
    assert all(r["stage"] == "ingest" and r["detail"] for r in tables["quarantine"])

    # Handled, not refused: non-ASCII text survives, APT-only and .pro-only proposals are stored.
    proposals = {r["proposal_id"]: r for r in tables["proposals"]}
    refused = set(truth["bad_records"]["empty_abstract"] + truth["bad_records"]["no_observations"])
    assert set(proposals) == set(truth["proposals"]) - refused
    assert all(proposals[pid]["cycle"] == info["cycle"] for pid, info in truth["proposals"].items() if pid in proposals)
    for pid in truth["bad_records"]["non_ascii"]:
        assert "Ramírez-Núñez" in proposals[pid]["pi"]
    for kind in ("apt_only", "pro_only"):
        assert all(proposals[pid]["abstract"] for pid in truth["bad_records"][kind])

    # Observations: exactly the public science images (spectra, calibration, exclusive, raw are filtered).
    assert {r["obsid"] for r in tables["observations"]} == set(truth["observations"])
    previews = {r["obsid"]: r for r in tables["previews"]}
    assert set(previews) == set(truth["observations"])
    ok = [r for r in previews.values() if r["status"] == "ok"]
    assert len(ok) >= len(previews) - 4
    store = ImageStore(DataLayout(str(reference_ingest)).images)
    for row in ok[:5]:
        assert row["source_url"].startswith("mast:HST/product/") and "_total_" in row["source_url"]
        assert len(row["original_sha256"]) == 64 and row["width"] > 0
        with Image.open(store.path(row["sha256"])) as image:
            assert image.size == (512, 512) and image.mode == "RGB"
    assert read_watermark(DataLayout(str(reference_ingest))) is not None


def test_refresh_with_nothing_new_writes_and_downloads_nothing(reference_copy, archive):
    before = snapshot(reference_copy)
    result = run_ingest(ingest_params(archive.url, reference_copy, refresh=True))
    assert result.cached and result.stats["planned"] == 0
    assert snapshot(reference_copy) == before
    paths = [path for _, path, _ in archive.request_log]
    assert not downloads(archive.request_log)
    assert not any("/hst-program-info/" in p or "/phase2-public/" in p or "catalog.txt" in p for p in paths)


def test_other_image_settings_on_a_stored_root_are_refused(reference_copy, archive):
    # Stored previews are never re-made without --rebuild: the table would claim 256 px for 512 px images.
    before = snapshot(reference_copy)
    with pytest.raises(InputError, match="image_size: stored 512, requested 256"):
        run_ingest(ingest_params(archive.url, reference_copy, image_size=256))
    assert snapshot(reference_copy) == before and not archive.request_log


@pytest.mark.chaos
def test_faults_give_the_same_tables_as_a_clean_run(archive, tmp_path, reference_ingest):
    archive.configure(faults=FaultConfig(latency_ms=2, fail_rate=0.15, executing_rate=0.3, truncate_rate=0.15,
                                         seed=11))
    # astroquery's own download_file (HEAD + GET, errors as return values) meets the faults here.
    result = run_ingest(ingest_params(archive.url, tmp_path / "data", max_rows_per_query=60,
                                      download_via="astroquery"))
    assert result.stats["windows"] > 1  # counted first, then split below the row limit
    assert snapshot(tmp_path / "data") == snapshot(reference_ingest)
    statuses = [status for _, _, status in archive.request_log]
    assert statuses.count(503) > 5


def test_retry_failed_reattempts_exactly_the_failed(reference_copy, archive, demo_sky):
    truth = ground_truth(demo_sky)["bad_records"]
    before = snapshot(reference_copy)
    failed = {r["obsid"]: r for r in before["previews"] if r["status"] not in ("ok", "policy_skip")}
    assert set(failed) == {*truth["corrupt_jpeg"], *truth["zero_byte_jpeg"], *truth["no_preview"],
                           *truth["preview_404"]}
    run_ingest(ingest_params(archive.url, reference_copy, retry_failed=True))
    fetched = set(downloads(archive.request_log))
    assert fetched == {r["source_url"] for r in failed.values() if r["source_url"]}
    invoked = [p for _, p, _ in archive.request_log if p.startswith("/api/v0/invoke")]
    assert len(invoked) == 1  # the product list for the observation without a jpegURL; no new query
    assert snapshot(reference_copy) == before  # the same failures, recorded once


def test_count_shortfall_is_an_error_never_the_answer(archive, tmp_path, shared_dir):
    replay = tmp_path / "replay"
    shutil.copytree(shared_dir / "fixtures" / "mast", replay)  # countsResp.json says 599; 3 rows come back
    archive.configure(replay_dir=replay)
    with pytest.raises(RemoteError, match="3 of 599"):
        run_ingest(ingest_params(archive.url, tmp_path / "data", catalog=False, calib_levels=[1, 2, 3]))


def test_recorded_mast_answers_replay(archive, tmp_path, shared_dir):
    replay = tmp_path / "replay"
    shutil.copytree(shared_dir / "fixtures" / "mast", replay)
    (replay / "countsResp.json").unlink()  # let the archive count the recorded rows it filters
    shutil.copy(shared_dir / "fixtures" / "proposals" / "13012_phase2.apt", replay)
    archive.configure(replay_dir=replay)
    data = tmp_path / "data"
    run_ingest(ingest_params(archive.url, data, catalog=False, calib_levels=[1, 2, 3], max_images_per_proposal=0))
    tables = snapshot(data)
    assert [r["obs_id"] for r in tables["observations"]] == ["O6AU01MSQ", "O6AU01MTQ", "O6AU01MUQ"]
    first = tables["observations"][0]
    assert first["proposal_id"] == "8880" and first["jpeg_url"].startswith("https://archive.stsci.edu/hst/previews/")
    assert first["t_obs_release"] == pytest.approx(52537.68917)
    assert {(r["record_id"], r["reason"]) for r in tables["quarantine"]} == {("proposal/8880", "no_proposal_document")}
    assert all(r["status"] == "policy_skip" for r in tables["previews"])  # limit 0: nothing sampled

    # The recorded APT document, fetched over HTTP (rate limit, User-Agent) and parsed.
    from schemas.settings import get_settings
    from tasks.mast.http import DocumentClient
    from tasks.mast.proposals import DocumentCache, ProposalFetcher

    client = DocumentClient(get_settings(stsci_url=archive.url))
    proposal = ProposalFetcher(client, DocumentCache(str(tmp_path / "cache")), archive.url).fetch("13012")
    assert (proposal.cycle, proposal.source, proposal.pi) == (20, "apt", "Laurent Lamy")


def test_cycles_come_from_the_proposal_store(tmp_path, archive):
    with pytest.raises(InputError, match="no proposal of cycle"):
        run_ingest(ingest_params(archive.url, tmp_path / "empty", catalog=False, cycles=[15]))


def test_refresh_picks_up_a_new_cycle(archive, tmp_path):
    from tasks.archive.sky import extend_sky, generate_sky

    sky = tmp_path / "sky"
    generate_sky(sky, proposals=6, seed=4, first_cycle=20, cycles=2, bad_records=False, mean_observations=3.0)
    archive.configure(sky_dir=sky)
    data = tmp_path / "data"
    run_ingest(ingest_params(archive.url, data, catalog=False))
    first = snapshot(data)
    mark = read_watermark(DataLayout(str(data)))
    assert {r["cycle"] for r in first["proposals"]} == {20, 21}

    info = extend_sky(sky, proposals=3, seed=9)
    archive.configure(sky_dir=sky)
    archive.clear_log()
    result = run_ingest(ingest_params(archive.url, data, catalog=False, refresh=True))
    second = snapshot(data)
    new_ids = {r["proposal_id"] for r in second["proposals"]} - {r["proposal_id"] for r in first["proposals"]}
    assert len(new_ids) == 3 and {r["cycle"] for r in second["proposals"] if r["proposal_id"] in new_ids} == {22}
    assert info.cycles[-1] == 22
    old_urls = {r["source_url"] for r in first["previews"]}
    assert not set(downloads(archive.request_log)) & old_urls  # nothing stored is fetched again
    new_previews = [r for r in second["previews"] if r["proposal_id"] in new_ids]
    assert new_previews and all(r["status"] == "ok" for r in new_previews)
    assert [r for r in second["previews"] if r["proposal_id"] not in new_ids] == first["previews"]
    assert result.stats["targets"] == 3
    assert read_watermark(DataLayout(str(data))).t_obs_release > mark.t_obs_release

    # By cycle: the ids come from the proposal store; everything is stored already.
    by_cycle = run_ingest(ingest_params(archive.url, data, catalog=False, cycles=[22]))
    assert by_cycle.cached and snapshot(data) == second

    # --rebuild ignores the watermark and the stored rows: everything is fetched again, same content.
    archive.clear_log()
    rebuilt = run_ingest(ingest_params(archive.url, data, catalog=False, rebuild=True))
    assert snapshot(data) == second
    assert set(downloads(archive.request_log)) == {r["source_url"] for r in second["previews"]}
    assert rebuilt.stats["queried"] == len(second["observations"])
    versions = list((data / "tables" / "observations" / "_versions").glob("*.json"))
    assert len(versions) >= 2


def test_observation_rows_with_nulls_are_cleaned_or_refused():
    from tasks.mast.observations import to_observations

    rows = [
        {"obsid": 11, "obs_id": "a", "proposal_id": "07885", "s_ra": None, "t_obs_release": 5.0, "jpegURL": None},
        {"obsid": 12, "obs_id": "b", "proposal_id": "5", "s_ra": 400.0},  # impossible RA
        {"obsid": None, "obs_id": "c", "proposal_id": "5"},  # no obsid
        {"obsid": 13, "obs_id": "d", "proposal_id": "5", "obs_collection": "HLA"},
        {"obsid": 11, "obs_id": "a", "proposal_id": "7885", "t_obs_release": 6.0},  # duplicate: last wins
    ]
    good, bad = to_observations(rows)
    assert [(o.obsid, o.proposal_id, o.t_obs_release, o.jpeg_url, o.s_ra) for o in good] == [
        ("11", "7885", 6.0, "", None)]
    assert sorted((f.record_id, f.reason) for f in bad) == [
        ("observation/12", "invalid_observation"), ("observation/13", "outside_selection"),
        ("observation/c", "invalid_observation")]


def test_masked_cells_become_none():
    import numpy as np
    from astropy.table import MaskedColumn, Table

    from tasks.mast.observations import table_rows

    table = Table({"obsid": ["1", "2"], "s_ra": MaskedColumn([1.5, np.nan], mask=[False, False]),
                   "calib": MaskedColumn([3, -999], mask=[False, True]), "name": MaskedColumn(["x", ""], mask=[False, True])})
    assert table_rows(table) == [{"obsid": "1", "s_ra": 1.5, "calib": 3, "name": "x"},
                                 {"obsid": "2", "s_ra": None, "calib": None, "name": None}]
