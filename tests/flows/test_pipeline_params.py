"""`hubbleclip pipeline --params FILE`: the file is the base, only options the user typed override it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.commands.pipeline import build_params
from schemas.errors import InputError
from schemas.pipeline import PipelineParams, RebuildParams

NO_OPTIONS = dict(until=None, mast_url=None, stsci_url=None, max_images=None, max_proposals=None,
                  summarizer=None, summarizer_model=None, summarizer_url=None, preset=None, steps=None,
                  batch_size=None, control=None, train_deployment=None, dask=None, refresh_cache=False)


def _file(tmp_path: Path, **values) -> Path:
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"data": str(tmp_path / "data"), **values}))
    return path


def test_file_values_survive_when_no_option_is_given(tmp_path):
    params_file = _file(tmp_path, until="dataset", shuffled_control=False, refresh_cache=True,
                        train={"preset": "tiny", "steps": 7})
    params = build_params(PipelineParams, data=None, params_file=params_file, **NO_OPTIONS)
    assert params.until == "dataset"
    assert params.shuffled_control is False
    assert params.refresh_cache is True
    assert params.train.steps == 7
    assert params.data == str((tmp_path / "data").resolve())


def test_typed_options_override_the_file(tmp_path):
    params_file = _file(tmp_path, until="dataset", shuffled_control=False, train={"steps": 7})
    options = {**NO_OPTIONS, "until": "train", "control": True, "steps": 9}
    params = build_params(PipelineParams, data=str(tmp_path / "elsewhere"), params_file=params_file, **options)
    assert (params.until, params.shuffled_control, params.train.steps) == ("train", True, 9)
    assert params.data == str((tmp_path / "elsewhere").resolve())


def test_defaults_apply_without_file_or_options(tmp_path):
    params = build_params(PipelineParams, data=str(tmp_path), params_file=None, **NO_OPTIONS)
    defaults = PipelineParams(data=str(tmp_path))
    assert (params.until, params.shuffled_control) == (defaults.until, defaults.shuffled_control)


def test_rebuild_always_runs_to_evaluate(tmp_path):
    params_file = _file(tmp_path, until="summarize")
    params = build_params(RebuildParams, data=None, params_file=params_file,
                          **{**NO_OPTIONS, "until": "evaluate", "refresh_cache": True})
    assert params.until == "evaluate"


def test_unknown_stage_is_refused_by_name(tmp_path):
    with pytest.raises(InputError, match="--until.*'nope'"):
        build_params(PipelineParams, data=str(tmp_path), params_file=None, **{**NO_OPTIONS, "until": "nope"})


def test_the_cli_passes_the_file_through_without_resetting_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import flows.pipeline
    from flows.cli import app

    seen: list[PipelineParams] = []

    def capture(params):
        seen.append(params)
        raise SystemExit(0)

    monkeypatch.setattr(flows.pipeline, "pipeline", capture)
    params_file = _file(tmp_path, until="summarize", shuffled_control=False)
    result = CliRunner().invoke(app, ["pipeline", "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    assert (seen[0].until, seen[0].shuffled_control) == ("summarize", False)

    seen.clear()
    result = CliRunner().invoke(app, ["pipeline", "--params", str(params_file), "--until", "train", "--control"])
    assert result.exit_code == 0, result.output
    assert (seen[0].until, seen[0].shuffled_control) == ("train", True)


def test_an_out_of_range_option_is_one_line_naming_the_field(tmp_path, capsys):
    from flows.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["pipeline", "--data", str(tmp_path), "--max-proposals", "-3"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ingest.max_proposals" in err and "greater than" in err, err


def test_a_multi_line_error_is_one_line_that_keeps_its_advice(tmp_path, capsys):
    from flows.cli import main

    state = tmp_path / "state"
    state.mkdir()
    (state / "ingest-watermark.json").write_text("[1, 2")  # cut short
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "--data", str(tmp_path), "--mast-url", "http://127.0.0.1:9"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "ingest-watermark.json is unreadable" in err and err.endswith("or run ingest --rebuild"), err


def test_a_server_address_that_is_not_a_url_is_refused_before_any_request(tmp_path, capsys):
    from flows.cli import main

    for command in (["ingest"], ["pipeline", "--until", "ingest"]):
        for bad in ("notaurl", "ftp://mast.example", "http://"):
            with pytest.raises(SystemExit) as exit_info:  # was: requests' MissingSchema after the retries
                main([*command, "--data", str(tmp_path / "data"), "--mast-url", bad])
            assert exit_info.value.code == 1
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and "mast_url" in err and repr(bad) in err, err
    assert not (tmp_path / "data").exists()


def test_a_params_file_that_is_not_a_json_object_is_named(tmp_path, capsys):
    from flows.cli import main

    path = tmp_path / "params.json"
    for content, problem in (("{'until': 'ingest'}", "is not valid JSON"), ("[1]", "holds a JSON list")):
        path.write_text(content)
        with pytest.raises(SystemExit) as exit_info:
            main(["pipeline", "--params", str(path)])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert f"--params {path} {problem}" in err and len(err.splitlines()) == 1, err


def test_a_failed_flow_prints_no_traceback_on_the_console_but_the_api_handler_gets_it():
    import logging
    import sys

    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.cli import _ConsoleWithoutTraceback, quiet_flow_tracebacks

    quiet_flow_tracebacks()
    [console] = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    try:
        assert isinstance(console.formatter, _ConsoleWithoutTraceback) and quiet_flow_tracebacks() == 0
        try:
            raise ValueError("boom")
        except ValueError as err:
            record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1,
                                       "Encountered exception during execution: %r", (err,), sys.exc_info())
        record.flow_run_name, record.flow_run_id = "tested-run", "0"  # what Prefect's run logger adds
        assert "Traceback" in logging.Formatter().format(record)  # as the API handler formats it, first
        shown = console.format(record)
        assert "Encountered exception during execution: ValueError('boom')" in shown and "Traceback" not in shown
        assert "Traceback" in logging.Formatter().format(record)  # the record is left as it was
    finally:
        console.setFormatter(console.formatter.inner)


def test_the_pipeline_command_fails_in_a_few_lines_ending_with_the_reason(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "ingest-watermark.json").write_text("[1,")
    done = subprocess.run([sys.executable, "-m", "flows.cli", "pipeline", "--data", str(tmp_path), "--until", "ingest",
                           "--mast-url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) < 30, done.stderr  # was 159 lines, three tracebacks
    assert any(line.startswith("hubbleclip: error: watermark ") and line.endswith("or run ingest --rebuild")
               for line in lines), done.stderr
    assert any("Encountered exception during execution: InputError(" in line for line in lines), done.stderr


def test_one_line_joins_every_line_of_a_message():
    from flows.cli import one_line

    # e.g. a library's error whose second line says what to do
    assert one_line("bad config\n  at line 3\n\nfix: delete it\n") == "bad config at line 3 fix: delete it"
    assert one_line("x" * 50, limit=20) == "x" * 17 + "..."


def test_validation_reasons_names_every_field():
    from pydantic import BaseModel, Field, ValidationError

    from schemas.errors import validation_reasons

    class Form(BaseModel):
        steps: int = Field(ge=1)
        lr: float = Field(gt=0)

    with pytest.raises(ValidationError) as info:
        Form(steps=0, lr=-1)
    reasons = validation_reasons(info.value)
    assert reasons.startswith("steps: ") and "; lr: " in reasons and "\n" not in reasons
    assert validation_reasons(ValueError("plain\nsecond")) == "plain"


def test_forms_take_their_data_root_from_the_environment(monkeypatch):
    # A worker's HUBBLECLIP_DATA (the compose stack's shared /data) is where a deployed run works
    # when its form leaves `data` alone.
    from schemas.train import TrainParams

    monkeypatch.setenv("HUBBLECLIP_DATA", "/shared/data")
    assert PipelineParams().data == TrainParams().data == "/shared/data"
    monkeypatch.delenv("HUBBLECLIP_DATA")
    assert PipelineParams().data == "./data"


def test_the_summarizer_server_comes_from_the_environment_in_forms_and_commands(monkeypatch):
    # The compose stack sets HUBBLECLIP_VLLM_URL for its workers: the pipeline form's `openai`
    # backend and `hubbleclip summarize-text` then talk to its vLLM service without being told.
    from flows.commands.summarize import _params
    from schemas.summary import SummarizeParams

    monkeypatch.setenv("HUBBLECLIP_VLLM_URL", "http://vllm:8000/v1")
    assert PipelineParams().summarize.base_url == SummarizeParams().base_url == "http://vllm:8000/v1"
    assert _params(backend="openai", base_url=None).base_url == "http://vllm:8000/v1"
    assert _params(backend="openai", base_url="http://gpu-7:8000/v1").base_url == "http://gpu-7:8000/v1"
    monkeypatch.delenv("HUBBLECLIP_VLLM_URL")
    assert SummarizeParams().base_url == "http://127.0.0.1:8000/v1"


def test_the_dask_runner_without_its_extra_says_which_to_install(tmp_path, monkeypatch):
    import builtins

    from flows.pipeline import _dask
    from flows.stages import _dask_runner

    real_import = builtins.__import__

    def without_dask(name, *args, **kwargs):
        if name.split(".")[0] in ("distributed", "prefect_dask"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_dask)
    params = PipelineParams(data=str(tmp_path), task_runner="dask")
    with pytest.raises(InputError, match=r"pip install 'hubbleclip\[dask\]'"), _dask(params):
        pass
    with pytest.raises(InputError, match=r"prefect-dask.*hubbleclip\[dask\]"):
        _dask_runner("tcp://127.0.0.1:8786")
