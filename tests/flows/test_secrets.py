"""Secrets from Prefect Secret blocks: copied into the environment for the stages, masked in logs."""

from __future__ import annotations

import logging
import uuid

from flows import secrets as flow_secrets
from tasks.secrets import MASK, redact


def test_secret_blocks_fill_the_environment_and_are_masked(monkeypatch, caplog):
    from prefect.blocks.system import Secret

    token = f"block-token-{uuid.uuid4().hex}"
    monkeypatch.delenv("HUBBLECLIP_MAST_TOKEN", raising=False)
    monkeypatch.setenv("HUBBLECLIP_VLLM_API_KEY", f"env-key-{uuid.uuid4().hex}")  # the environment wins
    monkeypatch.setattr(flow_secrets, "_looked_up", set())
    Secret(value=token).save(flow_secrets.block_name("mast_token"), overwrite=True)

    loaded = flow_secrets.prepare_secrets()
    assert loaded == ["mast_token"]
    import os

    assert os.environ["HUBBLECLIP_MAST_TOKEN"] == token
    from schemas.settings import Settings

    assert Settings().mast_token.get_secret_value() == token
    monkeypatch.delenv("HUBBLECLIP_MAST_TOKEN")  # registered: masked even once the variable is gone
    with caplog.at_level(logging.INFO):
        logging.getLogger("hubbleclip.test").info("sending %s", token)
    assert token not in caplog.text and MASK in caplog.text
    assert redact(f"Authorization: token {token}") == f"Authorization: token {MASK}"
    assert flow_secrets.prepare_secrets() == []  # blocks are asked for once per process
