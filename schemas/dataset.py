"""The training set: one example record, its Arrow schema, and the build and loader parameters.

An example is one preview image joined with its observation, its proposal and the proposal's
summary. Shards store examples with an explicit Arrow schema whose image column is Hugging Face's
Image feature (a struct of bytes and path), so `datasets.load_dataset("parquet", ...)` and the
Hub's viewer show pictures.
"""

from __future__ import annotations

import json
import math
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.records import normalize_proposal_id
from schemas.settings import default_data_root

SPLITS: tuple[str, ...] = ("train", "val", "test")
Split = Literal["train", "val", "test"]
SplitMode = Literal["hash", "cycle"]
CaptionSource = Literal["summary", "abstract"]

# Bumped when the example layout or the build's logic changes, so old versions are never reused.
DATASET_FORMAT = 2  # 2: shard boundaries planned before any image is read (scale-out build)


class ExampleMeta(BaseModel):
    """Everything about an example except its pixels: validated before the image is read."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    obsid: str
    obs_id: str = ""
    proposal_id: str
    split: Split
    cycle: int = Field(ge=0, le=100)
    category: str = ""
    title: str = ""
    instrument: str = ""
    filters: str = ""
    target: str = ""
    s_ra: float | None = None
    s_dec: float | None = None
    caption_summary: str = Field(description="'<objects and phenomena>; <science use cases>'; '' if none")
    caption_abstract: str = Field(min_length=1, description="the abstract, optionally 'Category: X. ' first")
    objects_and_phenomena: list[str] = Field(default_factory=list)
    science_use_cases: list[str] = Field(default_factory=list)
    image_sha256: str = Field(min_length=64, max_length=64)

    @field_validator("obsid")
    @classmethod
    def _obsid_digits(cls, v: str) -> str:
        if not v or not v.isdigit():
            raise ValueError(f"obsid must be a non-empty string of digits, got {v!r}")
        return v

    @field_validator("proposal_id", mode="before")
    @classmethod
    def _proposal(cls, v: object) -> str:
        return normalize_proposal_id(v)

    @field_validator("s_ra", "s_dec")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"coordinates must be finite, got {v!r}")
        return v


class Example(ExampleMeta):
    """One training pair: the 512x512 preview JPEG and its captions."""

    image: bytes = Field(repr=False, description="the stored 512x512 preview JPEG")


def _hf_features(schema: pa.Schema) -> dict:
    """Hugging Face `datasets` feature JSON for the example schema (written by hand: `datasets`
    is a dev dependency and the shard writer must not need it)."""
    value_types = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64", pa.float64(): "float64"}
    features: dict[str, dict] = {}
    for field in schema:
        if field.name == "image":
            features[field.name] = {"_type": "Image"}
        elif pa.types.is_list(field.type):
            inner = value_types[field.type.value_type]
            features[field.name] = {"feature": {"dtype": inner, "_type": "Value"}, "_type": "List"}
        else:
            features[field.name] = {"dtype": value_types[field.type], "_type": "Value"}
    return {"info": {"features": features}}


_EXAMPLE_FIELDS = pa.schema([
    pa.field("obsid", pa.string()),
    pa.field("obs_id", pa.string()),
    pa.field("proposal_id", pa.string()),
    pa.field("split", pa.string()),
    pa.field("cycle", pa.int32()),
    pa.field("category", pa.string()),
    pa.field("title", pa.string()),
    pa.field("instrument", pa.string()),
    pa.field("filters", pa.string()),
    pa.field("target", pa.string()),
    pa.field("s_ra", pa.float64()),
    pa.field("s_dec", pa.float64()),
    pa.field("caption_summary", pa.string()),
    pa.field("caption_abstract", pa.string()),
    pa.field("objects_and_phenomena", pa.list_(pa.string())),
    pa.field("science_use_cases", pa.list_(pa.string())),
    pa.field("image_sha256", pa.string()),
    pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
])
EXAMPLE_SCHEMA: pa.Schema = _EXAMPLE_FIELDS.with_metadata(
    {"huggingface": json.dumps(_hf_features(_EXAMPLE_FIELDS))}
)


class BuildDatasetParams(BaseModel):
    """Parameters of the `build_dataset` flow (also the Prefect UI form)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(default_factory=default_data_root, description="data root: a local path or an fsspec URL")
    split_mode: SplitMode = Field(
        default="hash",
        description="'hash': by a salted hash of the proposal id (stable as cycles are added); "
        "'cycle': train/val on cycles <= cycle_cutoff, test on later cycles",
    )
    split_salt: str = Field(default="hubbleclip-split-v1", min_length=1,
                            description="salt of the proposal hash; changing it reshuffles every split")
    train_fraction: float = Field(default=0.8, gt=0, lt=1)
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    test_fraction: float = Field(default=0.1, ge=0, lt=1)
    cycle_cutoff: int | None = Field(default=None, ge=0, le=100,
                                     description="split_mode='cycle': the last cycle in train/val")
    category_prefix: bool = Field(default=True, description="start abstract captions with 'Category: X.'")
    require_summary: bool = Field(
        default=True, description="quarantine examples whose proposal has no summary (else caption_summary='')"
    )
    image_size: int = Field(default=512, ge=16, le=4096, description="side of the stored previews, in pixels")
    verify_images: bool = Field(default=True, description="decode every JPEG once; unreadable ones are quarantined")
    shard_target_mb: float = Field(default=256, gt=0, le=4096, description="target Parquet shard size")
    row_group_rows: int = Field(default=256, ge=1, le=100_000, description="rows per Parquet row group")
    compression_level: int = Field(default=3, ge=1, le=22, description="zstd level")
    set_latest: bool = Field(default=True, description="point datasets/latest at the result")
    rebuild: bool = Field(default=False, description="rebuild even when this version already exists")

    @model_validator(mode="after")
    def _consistent(self) -> BuildDatasetParams:
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train/val/test fractions must sum to 1, got {total:.4f}")
        if self.split_mode == "cycle" and self.cycle_cutoff is None:
            raise ValueError("split_mode='cycle' needs cycle_cutoff (the last cycle used for training)")
        return self

    def version_config(self) -> dict:
        """The settings that change the bytes of a version, hence its id (not where or whether to write)."""
        config = self.model_dump(exclude={"data", "set_latest", "rebuild"})
        if self.split_mode == "hash":
            config["cycle_cutoff"] = None
        config["format"] = DATASET_FORMAT
        return config


class LoaderParams(BaseModel):
    """How to stream one split of a dataset version into batches (see tasks.dataset.make_loader)."""

    model_config = ConfigDict(extra="forbid")

    split: Split = "train"
    batch_size: int = Field(default=32, ge=1)
    train: bool | None = Field(default=None, description="augment, shuffle, balance; default: split == 'train'")
    image_size: int = Field(default=224, ge=8, description="side of the crop handed to the model")
    resize_to: int | None = Field(default=None, ge=8,
                                  description="resize the stored image to this side before cropping")
    caption_source: CaptionSource = "summary"
    max_words: int = Field(default=77, ge=1, description="abstract captions: longest sentence window, in words")
    shuffle_buffer: int = Field(default=1024, ge=0, description="rows held for shuffling, per worker")
    one_per_proposal: bool | None = Field(default=None,
                                          description="at most one image per proposal per batch; default: train")
    drop_last: bool | None = Field(default=None, description="drop a final partial batch; default: train")
    seed: int = 0
    num_workers: int = Field(default=0, ge=0)
    decode_device: Literal["cpu", "cuda"] = Field(default="cpu",
                                                  description="'cuda': hand JPEG bytes over and decode on the GPU")
    decoded_cache_mb: int = Field(
        default=256, ge=0, description="with resize_to: keep this many MB of decoded, resized images in each "
                                       "loader process (each worker has its own), so later epochs skip JPEG "
                                       "decoding (0: off)")
    include_jpeg: bool = Field(default=False, description="also return each example's JPEG bytes")
    pin_memory: bool = False
    prefetch_factor: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _sizes(self) -> LoaderParams:
        if self.resize_to is not None and self.resize_to < self.image_size:
            raise ValueError(f"resize_to ({self.resize_to}) is smaller than image_size ({self.image_size})")
        return self

    @property
    def is_train(self) -> bool:
        return self.split == "train" if self.train is None else self.train

    @property
    def proposal_unique(self) -> bool:
        return self.is_train if self.one_per_proposal is None else self.one_per_proposal

    @property
    def drops_last(self) -> bool:
        return self.is_train if self.drop_last is None else self.drop_last
