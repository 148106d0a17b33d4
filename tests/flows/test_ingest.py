"""The Prefect flows `ingest` / `ingest-refresh` and the ingest CLI commands."""

from __future__ import annotations

import json

import pytest

from flows.cli import main
from tests.tasks.mast.conftest import ingest_params, reference_copy, reference_ingest, snapshot  # noqa: F401


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_flow_writes_the_same_tables_and_reports_counts(archive, tmp_path, reference_ingest):  # noqa: F811
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows.ingest import ingest, refresh

    data = tmp_path / "data"
    result = ingest(ingest_params(archive.url, data))
    assert snapshot(data) == snapshot(reference_ingest)
    assert not result.cached and result.stats["previews_ok"] > 100
    with get_client(sync_client=True) as client:
        # The newest one: other tests in this session's Prefect may have run ingests too.
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-counts"])),
                                          sort=ArtifactSort.CREATED_DESC, limit=1)
    assert artifacts
    row = artifacts[0].data[0] if isinstance(artifacts[0].data, list) else json.loads(artifacts[0].data)[0]
    assert set(row) == {"queried", "observations_written", "proposals_fetched", "downloaded", "skipped", "failed",
                        "quarantined"}
    assert row["downloaded"] == result.stats["previews_ok"] and row["quarantined"] == 6

    again = refresh(ingest_params(archive.url, data))
    assert again.cached and again.digest == result.digest


def test_cli_refresh_and_one_line_errors(archive, capsys, reference_copy, tmp_path):  # noqa: F811
    code, out, _ = _cli(capsys, "refresh", "--data", str(reference_copy), "--mast-url", archive.url,
                        "--stsci-url", archive.url, "--json")
    assert code == 0 and json.loads(out)["cached"] is True
    code, _, err = _cli(capsys, "ingest", "--data", str(tmp_path / "empty"), "--mast-url", archive.url,
                        "--stsci-url", archive.url, "--cycles", "15")
    assert code == 1 and err.startswith("hubbleclip: error: no proposal of cycle(s) [15]") and err.count("\n") == 1
    code, _, err = _cli(capsys, "refresh", "--data", str(tmp_path / "empty"), "--mast-url", archive.url)
    assert code == 1 and "no ingest watermark" in err


def test_a_selection_that_names_nothing_is_refused_not_taken_for_the_whole_archive(capsys, tmp_path):
    for option, what in (("--proposals", "proposal id"), ("--cycles", "cycle")):
        code, _, err = _cli(capsys, "ingest", "--data", str(tmp_path / "data"), "--mast-url", "http://127.0.0.1:9",
                            option, " , ,")
        assert code == 1 and f"' , ,' names no {what}" in err and err.count("\n") == 1, err
    assert not (tmp_path / "data").exists()


def test_inspect_proposal_prints_json(capsys, shared_dir, demo_sky):
    code, out, _ = _cli(capsys, "inspect-proposal", str(shared_dir / "fixtures" / "proposals" / "13012_phase2.apt"))
    record = json.loads(out)
    assert code == 0 and list(record) == ["proposal_id", "cycle", "category", "title", "pi", "abstract", "source"]
    assert (record["proposal_id"], record["cycle"], record["source"]) == ("13012", 20, "apt")

    bad = {i for ids in json.loads((demo_sky / "ground_truth.json").read_text())["bad_records"].values() for i in ids}
    pro = next(p for p in sorted((demo_sky / "stsci" / "pro").glob("*.pro")) if p.stem not in bad)
    code, out, _ = _cli(capsys, "inspect-proposal", str(pro))
    record = json.loads(out)
    assert code == 0 and record["source"] == "pro" and record["proposal_id"] == pro.stem and record["abstract"]

    code, out, _ = _cli(capsys, "inspect-proposal", str(demo_sky / "stsci" / "catalog.txt"))
    records = json.loads(out)
    assert code == 0 and isinstance(records, list) and len(records) == 25
    assert {r["source"] for r in records} == {"catalog"}
    by_id = {r["proposal_id"]: r for r in records}
    apt = json.loads(_cli(capsys, "inspect-proposal", str(demo_sky / "stsci" / "apt" / f"{pro.stem}.apt"))[1])
    assert apt["title"] == by_id[pro.stem]["title"] == record["title"]
    assert apt["cycle"] == by_id[pro.stem]["cycle"] == record["cycle"]


def test_inspect_proposal_over_http(archive, capsys):
    code, out, _ = _cli(capsys, "inspect-proposal", archive.url + "/hst/proposal-abstracts/catalog.txt")
    assert code == 0 and len(json.loads(out)) == 25
    code, _, err = _cli(capsys, "inspect-proposal", archive.url + "/hst/phase2-public/1.pro")
    assert code == 1 and "HTTP 404" in err


def test_the_download_cache_key_covers_the_preview_settings():
    from flows.ingest import IngestKey
    from schemas.ingest import IngestParams, PreviewPolicy
    from tasks.mast.previews import PreviewJob

    jobs = [PreviewJob("2003520266", "8880", "mast:HST/product/x_total_drc.jpg")]
    key = IngestKey(fields=["jobs", "plan_digest"], previews=True)

    def computed(**settings) -> str:
        params = IngestParams(data="/tmp/hubbleclip-key-test", **settings)
        return key.compute_key(None, {"params": params, "jobs": jobs, "plan_digest": "d"}, {})

    base = computed()
    assert computed() == base
    for change in ({"image_size": 256}, {"padding_color": "#000000"}, {"preview_policy": PreviewPolicy(include=[])},
                   {"min_image_side": 32}, {"max_image_pixels": 1000}):
        assert computed(**change) != base, change


def test_the_proposal_cache_key_ignores_the_preview_settings():
    # Proposal documents do not depend on how previews are made or sampled: changing those must
    # not refetch every proposal.
    from flows.ingest import IngestKey
    from schemas.ingest import IngestParams

    key = IngestKey(fields=["proposal_ids"])

    def computed(**settings) -> str:
        params = IngestParams(data="/tmp/hubbleclip-key-test", **settings)
        return key.compute_key(None, {"params": params, "proposal_ids": ["8880"]}, {})

    base = computed()
    for change in ({"image_size": 256}, {"max_images_per_proposal": 2}, {"seed": 7}):
        assert computed(**change) == base, change
    assert computed(stsci_url="http://other.test") != base


def test_cli_refresh_keeps_the_preview_policy_of_the_root(archive, capsys, tmp_path):
    from storage import DataLayout, TableStore
    from tasks.archive.sky import extend_sky, generate_sky

    sky = tmp_path / "sky"
    generate_sky(sky, proposals=4, seed=4, first_cycle=20, cycles=1, bad_records=False, mean_observations=3.0)
    archive.configure(sky_dir=sky)
    data = tmp_path / "data"
    where = ("--data", str(data), "--mast-url", archive.url, "--stsci-url", archive.url)
    code, _, err = _cli(capsys, "ingest", *where, "--policy-include", "", "--policy-exclude", "drz")
    assert code == 0, err
    extend_sky(sky, proposals=2, seed=9)  # new releases, so the refresh commits new previews
    archive.configure(sky_dir=sky)
    code, out, err = _cli(capsys, "refresh", *where, "--json")
    assert code == 0, err
    assert json.loads(out)["stats"].get("previews_ok", 0) > 0
    manifest = TableStore(DataLayout(str(data)).tables).manifest("previews")
    assert manifest.config["policy"] == {"include": [], "exclude": ["drz"]}


def test_a_batch_that_met_an_outage_is_fetched_again_by_the_next_run_not_answered_from_the_cache(
        archive, tmp_path, monkeypatch, reference_ingest):  # noqa: F811
    from flows.ingest import ingest
    from schemas.settings import get_settings
    from tasks.mast import steps
    from tasks.mast.proposals import ProposalFailure

    def outage(ctx, proposal_ids):  # the STScI servers down for the whole run, past the client's retries
        return [], [ProposalFailure(pid, "http_503", "apt: HTTP 503", transient=True) for pid in proposal_ids]

    data = tmp_path / "data"
    params = ingest_params(archive.url, data, proposal_batch_size=1000)  # one batch: the next run makes it again
    with monkeypatch.context() as patched:
        patched.setattr(steps, "fetch_proposals", outage)
        first = ingest(params)
    assert first.stats["proposals_fetched"] == 0 and first.stats["proposals_refused"] > 0
    troubled = steps.transiently_failed_proposals(steps.IngestContext(params, get_settings()))
    assert len(troubled) == first.stats["proposals_refused"]

    second = ingest(params)  # the same day, servers back: the batch is fetched, not read from the cache
    assert second.stats["proposals_fetched"] > 0
    assert snapshot(data)["proposals"] == snapshot(reference_ingest)["proposals"]  # as if there was no outage


def test_failures_of_finished_batches_are_kept_when_another_batch_crashes(archive, tmp_path, monkeypatch,
                                                                          reference_ingest):  # noqa: F811
    # Batches that came back are committed, failures included, before the crash is raised: else
    # their cached outage would be answered to the next run as if it were the news.
    from flows.ingest import ingest
    from schemas.errors import InputError
    from schemas.settings import get_settings
    from tasks.mast import steps
    from tasks.mast.proposals import ProposalFailure

    data = tmp_path / "data"
    params = ingest_params(archive.url, data, proposal_batch_size=1)
    crashing: list[str] = []

    def outage_and_a_crash(ctx, proposal_ids):
        if not crashing:
            crashing.append(proposal_ids[0])
        if proposal_ids[0] == crashing[0]:
            raise InputError(f"proposal {proposal_ids[0]}: a bug in this batch")  # not retried
        return [], [ProposalFailure(pid, "http_503", "apt: HTTP 503", transient=True) for pid in proposal_ids]

    with monkeypatch.context() as patched:
        patched.setattr(steps, "fetch_proposals", outage_and_a_crash)
        with pytest.raises(Exception, match="a bug in this batch"):
            ingest(params)
    troubled = steps.transiently_failed_proposals(steps.IngestContext(params, get_settings()))
    assert troubled and crashing[0] not in troubled

    ingest(params)  # servers back, bug gone: every proposal is fetched, none answered from the cache
    assert snapshot(data)["proposals"] == snapshot(reference_ingest)["proposals"]


def test_previews_of_finished_batches_are_committed_when_another_batch_crashes(archive, tmp_path, monkeypatch,
                                                                              reference_ingest):  # noqa: F811
    from flows.ingest import ingest
    from schemas.errors import InputError
    from tasks.mast import steps

    data = tmp_path / "data"
    params = ingest_params(archive.url, data, commit_every=1000)  # one commit at the end: the case at stake
    real_download = steps.download_previews
    batches_seen: list[str] = []

    def one_batch_crashes(ctx, jobs):
        batches_seen.append(jobs[0].obsid)
        if len(batches_seen) == 2:
            raise InputError(f"preview batch from {jobs[0].obsid}: a bug")  # not retried
        return real_download(ctx, jobs)

    with monkeypatch.context() as patched:
        patched.setattr(steps, "download_previews", one_batch_crashes)
        with pytest.raises(Exception, match="a bug"):
            ingest(params)
    kept = snapshot(data)["previews"]
    reference = snapshot(reference_ingest)["previews"]
    assert 0 < len([r for r in kept if r["status"] == "ok"]) < len([r for r in reference if r["status"] == "ok"])
    assert all(row in reference for row in kept)

    ingest(params)  # the rest is downloaded; the committed batches are not planned again
    assert snapshot(data)["previews"] == reference
