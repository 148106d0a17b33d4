"""Typed errors. Records fail as values (a quarantine row); infrastructure fails as these.

The CLI prints `str(error)` as its one-line reason; Prefect's retry conditions use the type,
never the text, to decide whether a failure is worth retrying.
"""


class HubbleClipError(Exception):
    """Base of every error the project raises on purpose."""


class InputError(HubbleClipError, ValueError):
    """Something the user (or an upstream file) gave us is unusable. Never retried."""


class RemoteError(HubbleClipError):
    """A server failed in a way that may pass: timeouts, 429, 5xx, truncated bodies. Retried."""


class PermanentRemoteError(HubbleClipError):
    """A server answered definitively (404, 400, a MAST ERROR status). Not retried."""


def missing_extra(package: str, extra: str, purpose: str) -> InputError:
    """The one-line error for an optional dependency that is not installed."""
    return InputError(f"{purpose} needs the '{package}' package: pip install 'hubbleclip[{extra}]'")


def validation_reasons(err: Exception) -> str:
    """A pydantic ValidationError as one line naming every bad field: 'train.steps: Input should be
    greater than or equal to 1; until: ...'. (Its own str() starts '1 validation error for X',
    which names nothing.)"""
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    reasons = []
    for error in errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        reasons.append(f"{where}: {message}" if where else message)
    return "; ".join(reasons)
