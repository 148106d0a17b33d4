"""The preview sample: policy, seeded sampling without replacement, resumable, top-up only."""

from __future__ import annotations

from schemas.ingest import PreviewPolicy
from schemas.records import Observation, PreviewImage
from tasks.mast.previews import plan_previews, preview_name


def _obs(obsid: int, pid: str = "100", url: str | None = None) -> Observation:
    return Observation(obsid=str(obsid), obs_id=f"o{obsid}", proposal_id=pid,
                       jpeg_url=url if url is not None else f"mast:HST/product/hst_{obsid}_total_drc.jpg")


def _ok(job) -> PreviewImage:
    return PreviewImage(obsid=job.obsid, proposal_id=job.proposal_id, status="ok")


def test_policy_follows_the_paper_by_default():
    policy = PreviewPolicy()
    assert policy.accepts("hst_12345_01_wfc3_uvis_total_ib1f01_drc.jpg")
    assert not policy.accepts("hst_12345_01_wfc3_uvis_total_color_drc.jpg")
    assert not policy.accepts("ib1f01010_drz.jpg")
    assert PreviewPolicy(include=[], exclude=[]).accepts("ib1f01010_drz.jpg")
    assert preview_name("mast:HST/product/x_total_drc.jpg") == "x_total_drc.jpg"
    assert preview_name("https://archive.stsci.edu/hst/previews/O6AU/O6AU01MSQ.jpg") == "O6AU01MSQ.jpg"


def test_sample_is_seeded_bounded_and_skips_are_recorded():
    observations = [_obs(i) for i in range(1, 31)] + [_obs(99, url="mast:HST/product/x_color_drc.jpg")]
    jobs, decided = plan_previews(observations, {}, policy=PreviewPolicy(), limit=20, seed=1)
    assert len(jobs) == 20 and len({j.obsid for j in jobs}) == 20
    statuses = {r.obsid: r.error for r in decided}
    assert "99" in statuses and "refused by policy" in statuses["99"]
    assert sum("not sampled" in e for e in statuses.values()) == 10
    again, _ = plan_previews(observations, {}, policy=PreviewPolicy(), limit=20, seed=1)
    other, _ = plan_previews(observations, {}, policy=PreviewPolicy(), limit=20, seed=2)
    assert [j.obsid for j in again] == [j.obsid for j in jobs]
    assert {j.obsid for j in other} != {j.obsid for j in jobs}


def test_resumed_plan_finishes_exactly_the_interrupted_one():
    observations = [_obs(i) for i in range(1, 41)]
    full, _ = plan_previews(observations, {}, policy=PreviewPolicy(), limit=20, seed=7)
    done = {j.obsid: _ok(j) for j in full[:8]}  # a run killed after 8 downloads
    rest, _ = plan_previews(observations, done, policy=PreviewPolicy(), limit=20, seed=7)
    assert {j.obsid for j in rest} == {j.obsid for j in full[8:]}


def test_new_observations_only_top_up_a_proposal():
    first = [_obs(i) for i in range(1, 6)]
    jobs, _ = plan_previews(first, {}, policy=PreviewPolicy(), limit=8, seed=0)
    stored = {j.obsid: _ok(j) for j in jobs}
    more = first + [_obs(i) for i in range(6, 20)]
    top_up, _ = plan_previews(more, stored, policy=PreviewPolicy(), limit=8, seed=0)
    assert len(top_up) == 3 and not {j.obsid for j in top_up} & set(stored)
    full = {**stored, **{j.obsid: _ok(j) for j in top_up}}
    assert plan_previews(more, full, policy=PreviewPolicy(), limit=8, seed=0)[0] == []


def test_retry_failed_reattempts_exactly_the_failed():
    observations = [_obs(i) for i in range(1, 6)]
    jobs, _ = plan_previews(observations, {}, policy=PreviewPolicy(), limit=20, seed=0)
    stored = {j.obsid: _ok(j) for j in jobs}
    stored["2"] = PreviewImage(obsid="2", proposal_id="100", status="decode_error", error="bad")
    stored["4"] = PreviewImage(obsid="4", proposal_id="100", status="http_error", http_status=404)
    assert plan_previews(observations, stored, policy=PreviewPolicy(), limit=20, seed=0)[0] == []
    retry, _ = plan_previews(observations, stored, policy=PreviewPolicy(), limit=20, seed=0, retry_failed=True)
    assert sorted(j.obsid for j in retry) == ["2", "4"]


def test_server_trouble_is_reattempted_without_retry_failed():
    # A 503, a 429 or a timeout (no status) past the retries may pass: every run tries again, in
    # the slot it holds. A 404 or a bad image waits for --retry-failed.
    observations = [_obs(i) for i in range(1, 7)]
    jobs, skipped = plan_previews(observations, {}, policy=PreviewPolicy(), limit=5, seed=0)
    stored = {j.obsid: _ok(j) for j in jobs} | {r.obsid: r for r in skipped}
    troubled = [j.obsid for j in jobs[:3]]
    for obsid, status in zip(troubled, (503, 429, 0), strict=True):
        stored[obsid] = PreviewImage(obsid=obsid, proposal_id="100", status="http_error", http_status=status)
    stored[jobs[3].obsid] = PreviewImage(obsid=jobs[3].obsid, proposal_id="100", status="http_error", http_status=404)
    stored[jobs[4].obsid] = PreviewImage(obsid=jobs[4].obsid, proposal_id="100", status="decode_error")
    again, decided = plan_previews(observations, stored, policy=PreviewPolicy(), limit=5, seed=0)
    assert [j.obsid for j in again] == troubled and not decided


def test_products_refused_by_the_policy_take_no_slot_again():
    # The highest-priority observation has no jpegURL and its products hold only refused previews:
    # the fetcher records policy_skip. Later runs must give its slot to the next observation.
    from tasks.mast.previews import PreviewFetcher, priority

    policy = PreviewPolicy()
    observations = [_obs(i) for i in (1, 2, 3)]
    top = min(observations, key=lambda o: priority(0, o.obsid)).obsid
    observations = [o.model_copy(update={"jpeg_url": ""}) if o.obsid == top else o for o in observations]
    fetcher = PreviewFetcher(None, None, None, None, policy, attempts=1)
    fetcher.list_previews = lambda obsids: {top: ["mast:HST/product/x_color_drc.jpg"]}

    stored: dict[str, PreviewImage] = {}
    for _ in range(3):  # three runs, limit 1
        jobs, decided = plan_previews(observations, stored, policy=policy, limit=1, seed=0)
        stored.update({d.obsid: d for d in decided})
        _, skipped = fetcher.resolve([j for j in jobs if not j.jpeg_url])
        stored.update({j.obsid: skipped.get(j.obsid) or _ok(j) for j in jobs})
    assert stored[top].status == "policy_skip"
    assert sum(v.status == "ok" for v in stored.values()) == 1  # the proposal got its preview
    assert plan_previews(observations, stored, policy=policy, limit=1, seed=0)[0] == []

    # Under another policy the product list is judged again.
    other = PreviewPolicy(include=[], exclude=[])
    assert [j.obsid for j in plan_previews(observations, stored, policy=other, limit=2, seed=0)[0]] == [top]
