"""Secrets stay secret; nothing read back from shared storage is unpickled or used unverified.

- Secrets planted in the environment (MAST token, vLLM API key, S3 keys) reach the places that
  need them (the MAST session's Authorization header) and nowhere else: not in any file a stage
  writes, not in its stdout, not in its DEBUG logs.
- No code path unpickles shared data: a source scan for pickle-family loaders, and checkpoints
  that are malicious pickles are refused without running their payload.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tasks.secrets import MASK, SecretRedactingFilter, install_redaction, redact, register_secret
from tests.chaos.conftest import stage_params

pytestmark = pytest.mark.chaos

REPO = Path(__file__).resolve().parents[2]
SOURCE_PACKAGES = ("tasks", "flows", "storage", "schemas", "benchmarks")


def planted_secrets() -> dict[str, str]:
    tail = uuid.uuid4().hex
    return {
        "HUBBLECLIP_MAST_TOKEN": f"mast-token-{tail}",
        "HUBBLECLIP_VLLM_API_KEY": f"vllm-key-{tail[::-1]}",
        "AWS_ACCESS_KEY_ID": "AKIA" + tail[:16].upper().replace("A", "Q"),
        "AWS_SECRET_ACCESS_KEY": f"aws/secret+{tail}",
    }


def _run_stage(stage: str, root: Path, env: dict[str, str], archive_url: str = "") -> str:
    params = stage_params(stage, root, archive_url).model_dump_json()
    proc = subprocess.run([sys.executable, "-m", "tests.chaos.stage_process", stage, params], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _leaks(root: Path, outputs: list[str], secrets: dict[str, str]) -> list[str]:
    found = []
    values = {name: value.encode() for name, value in secrets.items()}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{name} in {path.relative_to(root)}" for name, value in values.items() if value in data]
    for n, text in enumerate(outputs):
        found += [f"{name} in the output of process {n}" for name, value in secrets.items() if value in text]
    return found


def test_planted_secrets_reach_no_file_and_no_log_of_the_data_stages(archive, tmp_path, chaos_figures):
    secrets = planted_secrets()
    root = tmp_path / "data"
    outputs = [_run_stage(stage, root, secrets, archive.url) for stage in ("ingest", "summarize", "dataset")]
    assert "DEBUG" in outputs[0] and "urllib3" in outputs[0]  # the most talkative logging was on
    assert (root / "datasets" / "latest").is_file()
    assert _leaks(root, outputs, secrets) == []


@pytest.mark.slow
def test_planted_secrets_reach_no_file_and_no_log_of_train_and_evaluate(pipeline_reference, stage_root):
    secrets = planted_secrets()
    root = stage_root(pipeline_reference.after["dataset"])
    outputs = [_run_stage(stage, root, secrets) for stage in ("train", "evaluate")]
    assert (root / "reports").is_dir() and list(root.glob("runs/*/manifest.json"))
    assert _leaks(root, outputs, secrets) == []


def test_the_mast_token_goes_to_mast_only(monkeypatch):
    import requests

    from schemas.settings import Settings
    from tasks.mast.http import DocumentClient, configure_session

    token = planted_secrets()["HUBBLECLIP_MAST_TOKEN"]
    monkeypatch.setenv("HUBBLECLIP_MAST_TOKEN", token)
    settings = Settings()
    mast = requests.Session()
    configure_session(mast, settings)
    assert mast.headers["Authorization"] == f"token {token}"
    assert DocumentClient(settings)._session().headers.get("Authorization") is None  # STScI never sees it
    assert token not in repr(settings) and token not in settings.model_dump_json()


def test_no_flow_parameter_can_hold_a_secret():
    """Prefect stores flow parameters and shows them in its UI: no params model may carry a secret."""
    import importlib
    import pkgutil

    from pydantic import BaseModel, SecretStr

    import schemas

    offenders = []
    for info in pkgutil.iter_modules(schemas.__path__):
        module = importlib.import_module(f"schemas.{info.name}")
        for obj in vars(module).values():
            if not (isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == module.__name__):
                continue
            for name, field in obj.model_fields.items():
                words = set(name.lower().split("_"))
                if words & {"token", "secret", "password", "apikey", "credentials"} or "api_key" in name.lower():
                    if obj.__name__ != "Settings" or field.annotation is not SecretStr:
                        offenders.append(f"{obj.__module__}.{obj.__name__}.{name}")
    assert offenders == []


def test_log_records_are_redacted_whatever_the_handler(monkeypatch):
    secrets = planted_secrets()
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    registered = f"block-value-{uuid.uuid4().hex}"
    register_secret(registered)
    install_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("hubbleclip.chaos.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("token %s and key %s", secrets["HUBBLECLIP_MAST_TOKEN"], secrets["HUBBLECLIP_VLLM_API_KEY"])
        logger.warning("headers: %r", {"Authorization": "Bearer some-other-credential-123"})
        logger.warning("s3 with %s / %s", secrets["AWS_ACCESS_KEY_ID"], secrets["AWS_SECRET_ACCESS_KEY"])
        logger.warning("from a Secret block: %s", registered)
        try:
            raise RuntimeError(f"server refused token {secrets['HUBBLECLIP_MAST_TOKEN']}")
        except RuntimeError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert not [v for v in [*secrets.values(), registered, "some-other-credential-123"] if v in text], text
    assert text.count(MASK) >= 6 and "RuntimeError" in text  # masked, not dropped

    # The filter alone (for handlers of a process that did not install the factory).
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (secrets["AWS_SECRET_ACCESS_KEY"],), None)
    SecretRedactingFilter().filter(record)
    assert record.getMessage() == f"key={MASK}"
    assert redact("nothing secret here") == "nothing secret here"


# -- pickle ---------------------------------------------------------------------------------------
_UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cloudpickle", "load"),
                 ("cloudpickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
                 ("pd", "read_pickle"), ("pandas", "read_pickle"), ("marshal", "loads"), ("shelve", "open")}


def _unsafe_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        call = (owner, node.func.attr)
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{path.relative_to(REPO)}:{node.lineno}"
        if call in _UNSAFE_CALLS:
            found.append(f"{where} {owner}.{node.func.attr}")
        elif call == ("torch", "load"):
            flag = keywords.get("weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where} torch.load without weights_only=True")
        elif call in (("np", "load"), ("numpy", "load")):
            flag = keywords.get("allow_pickle")
            if isinstance(flag, ast.Constant) and flag.value is True:
                found.append(f"{where} np.load(allow_pickle=True)")
        elif call == ("yaml", "load") and "Loader" not in keywords:
            found.append(f"{where} yaml.load without a safe Loader")
    return found


def test_no_code_unpickles_what_it_reads():
    offenders = [hit for package in SOURCE_PACKAGES for path in sorted((REPO / package).rglob("*.py"))
                 for hit in _unsafe_calls(path)]
    assert offenders == []
    # Prefect results cross machines through shared storage: JSON, never its default pickle.
    from flows.caching import RESULT_SERIALIZER

    assert RESULT_SERIALIZER == "json"
    for path in (REPO / "flows").rglob("*.py"):
        assert "result_serializer=\"pickle\"" not in path.read_text() and "PickleSerializer" not in path.read_text()


class _Payload:
    """Unpickling this runs code: it creates the marker file (what an attacker's payload would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_checkpoint_is_refused_without_running_it(pipeline_reference, stage_root, tmp_path,
                                                              chaos_figures):
    from schemas.errors import InputError
    from tasks.train.stage import run_train

    root = stage_root(pipeline_reference.after["train"])
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"state_dict": _Payload(marker), "format": 1})
    (run_dir,) = [p.parent for p in root.glob("runs/*/manifest.json")]
    (run_dir / "manifest.json").unlink()  # unfinished: the next run resumes from last.pt
    (run_dir / "checkpoints" / "last.pt").write_bytes(evil)
    with pytest.raises(InputError, match="last.pt"):
        run_train(stage_params("train", root))
    assert not marker.exists()
    chaos_figures.bad_inputs.append("malicious pickle as a training checkpoint")
