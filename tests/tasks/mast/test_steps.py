"""Ingest steps on a data root, without the archive: the watermark, the image settings, query counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import InputError, RemoteError
from schemas.ingest import IngestParams, PreviewPolicy
from schemas.records import PreviewImage
from schemas.settings import get_settings
from tasks.mast import observations as caom
from tasks.mast import steps
from tasks.mast.watermark import read_watermark, watermark_path


def _context(root, **params) -> steps.IngestContext:
    return steps.IngestContext(IngestParams(data=str(root), **params), get_settings())


def _window_run(root, seen_max: float, **params) -> None:
    ctx = _context(root, **params)
    steps.finish(ctx, steps.resolve_selection(ctx), steps.ObservationsOutcome(scope=[], seen_max_release=seen_max))


def test_a_window_above_the_watermark_leaves_it_alone(tmp_path):
    # `ingest --since 60000` on a fresh root: what was released before 60000 was never asked for,
    # so the watermark must not claim it (every later default run would start at ~60092).
    root = tmp_path / "data"
    _window_run(root, 60099.5, since_mjd=60000, until_mjd=60100)
    assert read_watermark(_context(root).layout) is None
    assert steps.resolve_selection(_context(root, until_mjd=60200)).window.start == 0.0

    _window_run(root, 50000.0, until_mjd=50001)  # a complete run from the beginning sets it
    assert read_watermark(_context(root).layout).t_obs_release == 50000.0
    _window_run(root, 60099.5, since_mjd=55000, until_mjd=60100)  # starts past it: a gap below
    assert read_watermark(_context(root).layout).t_obs_release == 50000.0
    _window_run(root, 60099.5, since_mjd=49000, until_mjd=60100)  # starts within it: continues it
    assert read_watermark(_context(root).layout).t_obs_release == 60099.5


def test_a_damaged_watermark_fails_a_window_run_before_its_work_and_a_full_run_replaces_it(tmp_path):
    root = tmp_path / "data"
    _window_run(root, 50000.0, until_mjd=50001)
    path = Path(watermark_path(_context(root).layout))
    for damage in ('{"t_obs_release": "soon"}', "\x00\x01garbage"):
        path.write_text(damage)
        for params in ({}, {"since_mjd": 49000, "until_mjd": 60100}):  # each would continue the watermark
            with pytest.raises(InputError, match=r"watermark .*ingest-watermark.json is unreadable.*--rebuild"):
                steps.resolve_selection(_context(root, **params))
        _window_run(root, 60000.0, rebuild=True)  # ingest --rebuild used to fail here, after all its work
        assert read_watermark(_context(root).layout).t_obs_release == 60000.0


def _commit_one_preview(root, **params) -> None:
    ctx = _context(root, **params)
    steps.commit_previews(ctx, [PreviewImage(obsid="1", proposal_id="100", status="ok", sha256="a" * 64)])


def test_other_image_settings_are_refused_without_rebuild(tmp_path):
    root = tmp_path / "data"
    steps.check_image_settings(_context(root, image_size=256))  # no previews yet: anything goes
    _commit_one_preview(root)
    with pytest.raises(InputError) as info:
        steps.check_image_settings(_context(root, image_size=256, padding_color="#000000"))
    message = str(info.value)
    assert "image_size: stored 512, requested 256" in message and "padding_color" in message
    assert "policy" not in message and "--rebuild" in message
    with pytest.raises(InputError, match="policy"):
        steps.check_image_settings(_context(root, preview_policy=PreviewPolicy(include=[])))
    steps.check_image_settings(_context(root, image_size=256, rebuild=True))
    steps.check_image_settings(_context(root, max_images_per_proposal=5, seed=3))  # the sample may change


def test_recorded_image_settings_are_ingest_params(tmp_path):
    root = tmp_path / "data"
    assert steps.recorded_image_settings(_context(root).tables) == {}
    policy = PreviewPolicy(include=[], exclude=["drz"])
    _commit_one_preview(root, preview_policy=policy, padding_color="#102030")
    recorded = steps.recorded_image_settings(_context(root).tables)
    params = IngestParams(data=str(root), refresh=True, **recorded)
    assert (params.preview_policy, params.padding_color, params.image_size) == (policy, "#102030", 512)
    steps.check_image_settings(steps.IngestContext(params, get_settings()))


def test_rows_repeated_by_overlapping_pages_do_not_count_twice():
    rows = [dict(obsid=2003520266, obs_id="A", proposal_id="8880", t_obs_release=52537.1),
            dict(obsid=2003520267, obs_id="B", proposal_id="8880", t_obs_release=52537.2),
            dict(obsid=2003520267, obs_id="B", proposal_id="8880", t_obs_release=52537.2)]  # C is missing

    class Observations:
        def query_criteria(self, **criteria):
            from astropy.table import Table

            return Table(rows=rows)

    class Client:
        backoff_s = 0.0

        def observations(self):
            return Observations()

    spec = caom.QuerySpec(caom.Window(52537.0, 52537.5))
    with pytest.raises(RemoteError, match="returned 2 of 3 rows"):
        caom.fetch(Client(), spec, expected=3, min_days=1.0, attempts=1)
    assert len(caom.fetch(Client(), spec, expected=2, min_days=1.0, attempts=1)) == 3
