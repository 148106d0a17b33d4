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
