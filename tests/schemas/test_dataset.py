import json

import pytest
from pydantic import ValidationError

from schemas.dataset import EXAMPLE_SCHEMA, BuildDatasetParams, ExampleMeta, LoaderParams


def test_example_schema_carries_hugging_face_features_that_datasets_understands():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features.from_arrow_schema(EXAMPLE_SCHEMA)
    assert isinstance(features["image"], datasets.Image)
    assert features["cycle"].dtype == "int32"
    declared = json.loads(EXAMPLE_SCHEMA.metadata[b"huggingface"])["info"]["features"]
    assert list(declared) == EXAMPLE_SCHEMA.names


def test_version_config_ignores_where_and_whether_to_write():
    a = BuildDatasetParams(data="/a", rebuild=True, set_latest=False).version_config()
    b = BuildDatasetParams(data="s3://b/c").version_config()
    assert a == b and "data" not in a and a["format"] >= 1
    assert BuildDatasetParams(split_salt="x").version_config() != b


def test_example_meta_validates_and_normalises():
    meta = ExampleMeta(obsid="12", proposal_id="07885", split="val", cycle=7, caption_summary="",
                       caption_abstract="Text.", image_sha256="a" * 64)
    assert meta.proposal_id == "7885"
    with pytest.raises(ValidationError):
        ExampleMeta(obsid="x1", proposal_id="1", split="train", cycle=1, caption_summary="", caption_abstract="T",
                    image_sha256="a" * 64)
    with pytest.raises(ValidationError):
        ExampleMeta(obsid="1", proposal_id="1", split="train", cycle=1, caption_summary="", caption_abstract="",
                    image_sha256="a" * 64)


def test_loader_params_defaults_follow_the_split():
    train, val = LoaderParams(split="train"), LoaderParams(split="val")
    assert train.is_train and train.proposal_unique and train.drops_last
    assert not val.is_train and not val.proposal_unique and not val.drops_last
    assert LoaderParams(split="val", train=True).is_train
    with pytest.raises(ValidationError, match="resize_to"):
        LoaderParams(image_size=224, resize_to=128)
