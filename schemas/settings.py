"""Settings shared by every command: environment (HUBBLECLIP_*), then CLI options override."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REAL_MAST_URL = "https://mast.stsci.edu"
REAL_STSCI_URL = "https://www.stsci.edu"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUBBLECLIP_", extra="ignore")

    data: str = Field(default="./data", description="data root: a local path or any fsspec URL (s3://...)")
    mast_url: str = Field(default=REAL_MAST_URL, description="MAST server astroquery talks to")
    stsci_url: str = Field(default=REAL_STSCI_URL, description="where proposal documents are fetched")
    catalog_url: str = Field(default="", description="optional STScI proposal abstracts catalog flat file")
    vllm_url: str = Field(default="http://127.0.0.1:8000/v1",
                          description="the vLLM OpenAI-compatible server the `openai` summarizer backend talks to")
    download_concurrency: int = Field(default=16, ge=1, le=256)
    stsci_requests_per_second: float = Field(default=5.0, gt=0, le=1000)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=120.0, gt=0)
    http_retries: int = Field(default=5, ge=0, le=20)
    user_agent: str = "hubbleclip/0.1 (+https://github.com/hubbleclip/hubbleclip)"
    mast_token: SecretStr = Field(default=SecretStr(""), description="MAST API token (HUBBLECLIP_MAST_TOKEN): "
                                  "masked in reprs and dumps; never a flow parameter")

    @field_validator("mast_url", "stsci_url", "catalog_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("mast_url", "stsci_url")
    @classmethod
    def _server_url(cls, v: str) -> str:
        return check_server_url(v)


def check_server_url(url: str) -> str:
    """An http(s) server address, or ValueError saying what is wrong (before any request is tried:
    requests' own error names a derived endpoint and comes only after the retries)."""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"expected an http(s):// server address such as {REAL_MAST_URL}, got {url!r}")
    return url


def default_data_root() -> str:
    """The data root a params form starts with: $HUBBLECLIP_DATA where set (a worker's environment,
    e.g. /data on the compose stack's shared volume), else ./data."""
    return Settings().data


def default_vllm_url() -> str:
    """The `openai` summarizer's server a params form starts with: $HUBBLECLIP_VLLM_URL where set
    (http://vllm:8000/v1 on the compose stack), else a vLLM server on this machine."""
    return Settings().vllm_url


def get_settings(**overrides: object) -> Settings:
    """Settings from the environment with explicit overrides (None means 'not given')."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
