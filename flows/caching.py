"""Prefect cache policies and result storage shared by the pipeline's stage tasks.

Why a custom policy (prefect-notes.md 1.3, 1.5): Prefect's DEFAULT policy contains RUN_ID, so it
never hits across runs; INPUTS on a path hashes the path, not the file, so it goes stale. A stage's
cache key here is built from what actually determines its output:

- the digests of its input manifests (strings the previous stage returned, never re-read files),
- its configuration (the stage's pydantic params, data root included, as canonical JSON),
- the code version of the stage (a hash of the stage's own modules, prompts and presets included,
  because TASK_SOURCE only sees the text of the wrapping task), and CACHE_VERSION, a manual knob
  (both from tasks/code_version.py, which has no Prefect, so a stage can record its own).

Results cross machines (CPU box -> GPU worker) as JSON, never pickle: a `StageResult` is small
and JSON-serialisable, and Prefect's JSON serializer round-trips pydantic models.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel

from schemas.errors import InputError, PermanentRemoteError
from schemas.stage import StageResult
from storage.fs import exists, join
from tasks.code_version import CACHE_VERSION, code_version  # also imported from here by the flows

# Never pickle: results must load on another machine, with other library versions.
RESULT_SERIALIZER = "json"
# Environment overrides for shared result storage: a saved Prefect block slug, e.g.
# "s3-bucket/hubbleclip-results" (prefect-aws) for results and "s3-bucket/hubbleclip-cache-keys" for keys.
RESULT_STORAGE_ENV = "HUBBLECLIP_RESULT_STORAGE"
KEY_STORAGE_ENV = "HUBBLECLIP_CACHE_KEY_STORAGE"


def canonical_json(value: Any) -> str:
    """One text per value: pydantic models dumped in JSON mode, keys sorted."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


@dataclass
class ManifestDigests(CachePolicy):
    """Cache key = upstream manifest digests + stage config + stage code version.

    The task this decorates takes the inputs named here: `upstream` (name -> manifest digest),
    `params` (the stage's params model; its data root is part of it) and `code` (module names).
    """

    digests: str = "upstream"
    config: str = "params"
    code: str = "code"

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        upstream: Mapping[str, str] = inputs.get(self.digests) or {}
        modules: Sequence[str] = inputs.get(self.code) or ()
        return hash_objects(
            CACHE_VERSION,
            sorted((str(k), str(v)) for k, v in upstream.items()),
            canonical_json(inputs.get(self.config)),
            code_version(*modules),
            raise_on_failure=True,
        )


STAGE_CACHE_POLICY = ManifestDigests() + TASK_SOURCE


def result_storage_for(root: str) -> Path | str | None:
    """Where stage results and cache records live.

    A configured block (S3 through prefect-aws) wins; otherwise a local data root keeps them beside
    its data, under state/prefect/: the cache then travels with the data (a rebuilt version starts
    cold; deleting the data deletes its cache) and never leaks between test sessions. A remote data
    root without a block falls back to Prefect's default ($PREFECT_HOME/storage).
    """
    configured = os.environ.get(RESULT_STORAGE_ENV, "").strip()
    if configured:
        return configured
    if "://" in root and not root.startswith("file://"):
        return None
    return Path(join(root.removeprefix("file://"), "state", "prefect")).resolve()


def key_storage_for(root: str) -> Path | str | None:
    configured = os.environ.get(KEY_STORAGE_ENV, "").strip()
    if configured:
        return configured
    storage = result_storage_for(root)
    return storage / "keys" if isinstance(storage, Path) else None


def persisted_result_options(root: str, **options: Any) -> dict[str, Any]:
    """`Task.with_options` keyword arguments that persist a task's result (so its cache record is
    usable) as JSON, under `root`'s result storage; `options` are added as they are."""
    persisted: dict[str, Any] = {"persist_result": True, "result_serializer": RESULT_SERIALIZER, **options}
    storage = result_storage_for(root)
    if storage is not None:
        persisted["result_storage"] = storage
    return persisted


def stage_task_options(root: str, *, refresh: bool) -> dict[str, Any]:
    """`Task.with_options` keyword arguments that put a stage's cache under `root`."""
    policy = STAGE_CACHE_POLICY
    key_storage = key_storage_for(root)
    if key_storage is not None:
        policy = policy.configure(key_storage=key_storage)
    return persisted_result_options(root, cache_policy=policy, refresh_cache=refresh)


PRESENT_OUTPUTS = "outputs_present"


def _local_outputs(result: StageResult, root: str) -> dict[str, str]:
    root = root.rstrip("/")
    return {k: v for k, v in result.outputs.items() if root and isinstance(v, str) and v.startswith(root)}


def record_present_outputs(result: StageResult, root: str) -> StageResult:
    """Note which outputs under the data root exist now (a stage may list a table it had no rows
    for), so a later cache hit can tell whether its files are still there."""
    present = sorted(k for k, v in _local_outputs(result, root).items() if exists(v))
    return result.model_copy(update={"stats": {**result.stats, PRESENT_OUTPUTS: present}})


def outputs_still_present(result: StageResult, root: str) -> bool:
    """A cache record is only as good as the files it names."""
    local = _local_outputs(result, root)
    return all(exists(local[k]) for k in result.stats.get(PRESENT_OUTPUTS, []) if k in local)


def is_retryable(task: Any, task_run: Any, state: Any) -> bool:
    """Retry infrastructure failures; never a user error or a definitive remote answer."""
    try:
        state.result()
    except (InputError, PermanentRemoteError):
        return False
    except Exception:  # noqa: BLE001 - anything else (RemoteError, a crash) may pass on retry
        return True
    return False
