"""Pydantic models for every record, manifest, setting and flow parameter set.

Records validate on construction, so a bad value fails where it enters the pipeline, with a
message that names the field. Flow parameter models double as the Prefect UI forms.
"""

from schemas.errors import HubbleClipError, InputError, PermanentRemoteError, RemoteError
from schemas.manifest import FileEntry, Manifest
from schemas.records import Observation, PreviewImage, Proposal, QuarantineRecord

__all__ = [
    "FileEntry",
    "HubbleClipError",
    "InputError",
    "Manifest",
    "Observation",
    "PermanentRemoteError",
    "PreviewImage",
    "Proposal",
    "QuarantineRecord",
    "RemoteError",
]
