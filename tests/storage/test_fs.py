"""storage.fs: the one place that turns a path or URL into a filesystem."""

from __future__ import annotations

import pytest

from schemas.errors import InputError
from storage.fs import open_fs


def test_an_unknown_protocol_is_an_input_error_naming_the_url():
    with pytest.raises(InputError, match=r"^foo://bar: Protocol not known: foo \(expected a local path or an fsspec URL"):
        open_fs("foo://bar")


def test_the_cli_names_a_data_url_it_cannot_open(capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["datasets", "list", "--data", "foo://bar"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().startswith("hubbleclip: error: foo://bar: Protocol not known")
