"""Secrets from Prefect Secret blocks, looked up lazily, handed to the stages through the environment.

Stages (tasks/) read secrets from the environment only (tasks.secrets.get_secret); under Prefect,
`prepare_secrets()` fills each variable that is not already set from a Secret block named
`hubbleclip-<name>` (e.g. `hubbleclip-mast-token`, `hubbleclip-vllm-api-key`,
`hubbleclip-aws-secret-access-key`), registers every value for redaction, and installs the log
filter. Secrets are never flow parameters: Prefect stores parameters in its database and shows
them in the UI.

    prefect block create secret   # or: Secret(value="...").save("hubbleclip-mast-token")
"""

from __future__ import annotations

import logging
import os

from tasks.secrets import SECRET_ENV, install_redaction, register_secret

log = logging.getLogger(__name__)

BLOCK_PREFIX = "hubbleclip-"


def block_name(secret: str) -> str:
    return BLOCK_PREFIX + secret.replace("_", "-")


_looked_up: set[str] = set()  # blocks asked for once in this process (found or not)


def _load_block(name: str) -> str:
    """The value of Secret block `name`, or '' when there is none (or no Prefect API to ask)."""
    from prefect.blocks.system import Secret  # lazily: only flows that need a secret pay for it

    _looked_up.add(name)
    try:
        return str(Secret.load(name).get())
    except Exception as err:  # noqa: BLE001 - no such block or no reachable API: the environment decides
        log.debug("no Secret block %s (%s)", name, type(err).__name__)
        return ""


def prepare_secrets(names: tuple[str, ...] | None = None) -> list[str]:
    """Fill unset secret variables from Secret blocks; returns the names found in blocks."""
    install_redaction()
    loaded = []
    for name in names or tuple(SECRET_ENV):
        variable = SECRET_ENV[name][0]
        current = os.environ.get(variable, "")
        if current:
            register_secret(current)
            continue
        if block_name(name) in _looked_up:
            continue
        value = _load_block(block_name(name))
        if value:
            os.environ[variable] = value
            register_secret(value)
            loaded.append(name)
    return loaded
