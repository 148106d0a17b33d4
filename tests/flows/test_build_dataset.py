"""The build_dataset flow (cached on input manifests + config) and the dataset CLI commands."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flows.build_dataset import build_dataset
from flows.cli import app, main
from schemas.dataset import BuildDatasetParams
from storage.fs import read_text
from tasks.dataset import gc_versions, latest_version, list_versions, open_dataset
from tasks.dataset.synthetic import write_synthetic_inputs

SIZE = 64


def _params(data: str, **kw) -> BuildDatasetParams:
    return BuildDatasetParams(data=data, image_size=SIZE, row_group_rows=8, **kw)


def test_flow_builds_then_hits_its_cache_and_rebuilds_a_collected_version(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SIZE)
    first = build_dataset(_params(data))
    assert not first.cached and open_dataset(data).version == first.digest
    manifest = read_text(first.outputs["manifest"])
    second = build_dataset(_params(data))
    assert second.cached and second.digest == first.digest
    assert read_text(first.outputs["manifest"]) == manifest

    other = build_dataset(_params(data, split_salt="other"))
    assert other.digest != first.digest and latest_version(data) == other.digest
    again = build_dataset(_params(data))  # a cache hit still moves `latest` back
    assert again.cached and latest_version(data) == first.digest

    build_dataset(_params(data, split_salt="other"))
    gc_versions(data, keep=0)  # removes the first version: its Prefect cache record is now stale
    assert [v["version"] for v in list_versions(data)] == [other.digest]
    rebuilt = build_dataset(_params(data))
    assert rebuilt.digest == first.digest and open_dataset(data, first.digest).count("train") > 0


def test_cli_build_list_show_gc(tmp_path):
    data = str(tmp_path / "data")
    write_synthetic_inputs(data, proposals=6, images_per_proposal=2, size=SIZE)
    runner = CliRunner()
    base = ["--data", data, "--row-group-rows", "8", "--image-size", str(SIZE)]
    built = runner.invoke(app, ["build-dataset", *base])
    assert built.exit_code == 0, built.output
    version = latest_version(data)
    assert version in built.output and "train:" in built.output
    second = runner.invoke(app, ["build-dataset", *base, "--salt", "x", "--json"])
    assert second.exit_code == 0 and '"digest"' in second.output, second.output
    listed = runner.invoke(app, ["datasets", "list", "--data", data])
    assert listed.exit_code == 0 and version in listed.output and "latest" in listed.output
    shown = runner.invoke(app, ["datasets", "show", version, "--data", data, "--verify"])
    assert shown.exit_code == 0 and "shards verified" in shown.output and "caption_words" in shown.output
    dry = runner.invoke(app, ["datasets", "gc", "--data", data, "--keep", "0", "--dry-run"])
    assert dry.exit_code == 0 and "would remove 1" in dry.output
    for command in (["build-dataset", "--help"], ["datasets", "gc", "--help"]):
        assert runner.invoke(app, command).exit_code == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build-dataset", "--data", str(tmp_path / "empty")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hubbleclip: error: table 'observations' does not exist") and "\n" not in err


def test_a_mistyped_data_root_is_an_error_for_list_show_and_gc(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    for data, problem in ((tmp_path / "no-such-root", "no data root at"), (tmp_path / "a-file", "is a file")):
        for command in (["datasets", "list"], ["datasets", "show"], ["datasets", "gc", "--keep", "0"]):
            with pytest.raises(SystemExit) as exit_info:  # not "no dataset versions" / "removed 0" and exit 0
                main([*command, "--data", str(data)])
            assert exit_info.value.code == 1
            err = capsys.readouterr().err.strip()
            assert problem in err and str(data) in err, (command, err)


def test_single_stage_commands_use_the_published_version_after_a_rebuild(tmp_path):
    from flows.versions import publish_version, version_root

    parent = str(tmp_path / "data")
    live = version_root(parent, "v1")
    write_synthetic_inputs(live, proposals=6, images_per_proposal=2, size=SIZE)
    runner = CliRunner()
    unpublished = runner.invoke(app, ["build-dataset", "--data", parent, "--image-size", str(SIZE)])
    assert unpublished.exit_code != 0  # before `current` exists, --data is a flat root (empty here)
    publish_version(parent, "v1")
    built = runner.invoke(app, ["build-dataset", "--data", parent, "--row-group-rows", "8", "--image-size", str(SIZE)])
    assert built.exit_code == 0, built.output
    version = latest_version(live)  # written into the published version, not beside it
    assert version in built.output and latest_version(parent) is None
    listed = runner.invoke(app, ["datasets", "list", "--data", parent])
    assert listed.exit_code == 0 and version in listed.output
