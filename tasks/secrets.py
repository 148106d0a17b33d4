"""Secrets: where they come from, and keeping them out of logs, artifacts and reports.

Secrets are never parameters (Prefect stores flow parameters in its database and shows them in
the UI) and never written to the data root. They come from the environment only:

    HUBBLECLIP_MAST_TOKEN        MAST API token (also read by schemas.settings.Settings.mast_token)
    HUBBLECLIP_VLLM_API_KEY      the vLLM server's --api-key, for the 'openai' summarizer backend
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   s3:// data roots (s3fs / botocore)

Under Prefect, flows/secrets.py copies Prefect Secret blocks into these variables before a stage
runs (tasks/ never imports Prefect). `install_redaction()` makes every log record of the process
pass through `redact`, which replaces the current value of each of these variables (and of any
other variable whose name says TOKEN, SECRET, PASSWORD or API_KEY), every value given to
`register_secret`, and credential-shaped text (Authorization headers, AWS key ids) with `***`.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback

log = logging.getLogger(__name__)

MASK = "***"
MIN_SECRET_CHARS = 8  # shorter values ("", "EMPTY", "none") are placeholders, and masking them would garble logs

SECRET_ENV: dict[str, tuple[str, ...]] = {
    "mast_token": ("HUBBLECLIP_MAST_TOKEN",),
    "vllm_api_key": ("HUBBLECLIP_VLLM_API_KEY",),
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
}
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|ACCESS_KEY|PRIVATE_KEY)", re.IGNORECASE)
_PATTERNS = (
    # Authorization: token X / Bearer X / Basic X, in headers, reprs of dicts and curl lines
    re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:token|bearer|basic)\s+)[^\s'\",}]+"),
    re.compile(r"(?i)((?:api[_-]?key|token|secret|password)['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]{8,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
)

_registered: set[str] = set()
_lock = threading.Lock()
_installed = False


def get_secret(name: str) -> str:
    """The secret `name` (a SECRET_ENV key) from the environment, or '' when it is not set."""
    try:
        variables = SECRET_ENV[name]
    except KeyError:
        raise KeyError(f"unknown secret {name!r}; known: {', '.join(SECRET_ENV)}") from None
    for variable in variables:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return ""


def register_secret(value: str) -> None:
    """Mask `value` in every log record and `redact` call from now on (e.g. a Secret block's value)."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _registered.add(value)


def known_secrets() -> list[str]:
    """Every value to mask, longest first (a secret that contains another is masked whole)."""
    values = set(_registered)
    for variables in SECRET_ENV.values():
        values.update(os.environ.get(v, "") for v in variables)
    values.update(value for name, value in os.environ.items() if _SECRET_NAME.search(name))
    return sorted((v for v in values if len(v) >= MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` with every known secret value and credential-shaped substring replaced by ***."""
    if not text:
        return text
    for value in known_secrets():
        if value in text:
            text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        else:
            text = pattern.sub(MASK, text)
    return text


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place: its formatted message, exception and stack text."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string must not lose the record
        message = f"{record.msg!r} % {record.args!r}"
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class SecretRedactingFilter(logging.Filter):
    """A logging filter (for handlers) that masks secrets; it never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_redaction() -> None:
    """Mask secrets in every log record this process creates, whatever handler (Prefect's API
    handler, rich, a file) formats it. Idempotent; call it first thing in CLIs and flows."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            return redact_record(previous(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True
    for handler in logging.getLogger().handlers:  # records made before the factory was set
        if not any(isinstance(f, SecretRedactingFilter) for f in handler.filters):
            handler.addFilter(SecretRedactingFilter())
