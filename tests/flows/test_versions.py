"""Versioned data roots: a rebuild is invisible until published, then `current` moves atomically."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.versions import (
    COMPLETE,
    current_version,
    list_versions,
    new_version_id,
    prune_versions,
    publish_version,
    resolve_data_root,
    start_version,
    version_root,
)
from schemas.errors import InputError


def _make_version(data: str, version: str) -> str:
    root = version_root(data, version)
    (Path(root) / "tables").mkdir(parents=True)
    return root


def test_flat_root_resolves_to_itself(tmp_path):
    assert current_version(str(tmp_path)) is None
    assert resolve_data_root(str(tmp_path)) == str(tmp_path)


def test_unpublished_version_is_invisible_then_current_moves(tmp_path):
    data = str(tmp_path)
    first = _make_version(data, "v1")
    assert resolve_data_root(data) == data  # building v1 changes nothing for readers
    publish_version(data, "v1", {"note": "first"})
    assert resolve_data_root(data) == first
    second = _make_version(data, "v2")
    assert resolve_data_root(data) == first  # v1 stays readable while v2 is built
    publish_version(data, "v2")
    assert resolve_data_root(data) == second
    assert [v["version"] for v in list_versions(data)] == ["v1", "v2"]
    assert [v["current"] for v in list_versions(data)] == [False, True]


def test_pointer_to_incomplete_version_is_an_input_error(tmp_path):
    data = str(tmp_path)
    _make_version(data, "v1")
    (tmp_path / "current").write_text("v1\n")
    with pytest.raises(InputError, match="not a complete data version"):
        resolve_data_root(data)


def test_prune_keeps_current_and_newest(tmp_path):
    data = str(tmp_path)
    for name in ("a1", "a2", "a3"):
        _make_version(data, name)
        publish_version(data, name)
    _make_version(data, "a0-killed")  # an incomplete version older than current: a killed rebuild
    removed = prune_versions(data, keep=2)
    assert removed == ["a0-killed", "a1"]
    assert [v["version"] for v in list_versions(data)] == ["a2", "a3"]
    assert (tmp_path / "versions" / "a3" / COMPLETE).exists()


def test_prune_goes_by_start_and_completion_times_not_names(tmp_path):
    data = str(tmp_path)
    start_version(data, "z-old")
    publish_version(data, "z-old")
    start_version(data, "y-killed")  # never completed, and a newer rebuild completed after it
    start_version(data, "a-new")
    publish_version(data, "a-new")  # current
    start_version(data, "b-running")  # started after current: may still be running
    assert [v["version"] for v in list_versions(data)] == ["z-old", "y-killed", "a-new", "b-running"]
    assert prune_versions(data, keep=1) == ["y-killed", "z-old"]
    assert [v["version"] for v in list_versions(data)] == ["a-new", "b-running"]
    with pytest.raises(InputError, match="already exists"):
        start_version(data, "a-new")


def test_version_ids_are_plain_and_unique():
    ids = {new_version_id() for _ in range(20)}
    assert len(ids) == 20
    with pytest.raises(InputError):
        version_root("/tmp/x", "../escape")


def test_every_stage_code_module_exists_and_the_vocabulary_is_in_the_stages_that_read_it():
    # A typo here would stop edits from invalidating the pipeline's stage caches; code_version
    # refuses such a name, and this finds it before any run does.
    import importlib.util

    from flows.stages import STAGES

    for spec in STAGES.values():
        for module in spec.code:
            assert importlib.util.find_spec(module) is not None, (spec.name, module)
    for name in ("summarize", "evaluate"):  # extractive summaries and zero-shot/queries use it
        assert "schemas.vocabulary" in STAGES[name].code


def test_code_version_refuses_a_module_it_cannot_find():
    from flows.caching import code_version

    assert code_version("schemas.vocabulary") == code_version("schemas.vocabulary")
    with pytest.raises(ModuleNotFoundError, match="tasks.no_such_stage"):
        code_version("schemas.vocabulary", "tasks.no_such_stage")
    with pytest.raises(ModuleNotFoundError, match="no_such_package"):
        code_version("no_such_package.stage")
