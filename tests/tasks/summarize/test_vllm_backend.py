"""The vLLM backend for real, where `vllm` and a CUDA GPU are both present.

vLLM never installs in CI (it is the optional `[vllm]` extra), and the project's lent GPU machines
cannot take it either (a 336 MB CUDA wheel pinning another torch, no registry there), so this is
skipped in both; it is the check a user with `pip install 'hubbleclip[vllm]'` and a GPU runs with
`pytest -m gpu tests/tasks/summarize/test_vllm_backend.py`. The model is the tiny random Llama written
as a local model directory (no hub), so the test needs nothing but the extra.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu
pytest.importorskip("vllm", reason="the [vllm] extra is not installed")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("vLLM needs a CUDA GPU", allow_module_level=True)

from schemas.summary import SamplingConfig, SummarizeParams, SummaryLimits, summary_model  # noqa: E402
from tasks.summarize.backends.base import create_backend  # noqa: E402
from tasks.summarize.generate import parse_output  # noqa: E402
from tasks.summarize.tiny_lm import save_tiny_lm  # noqa: E402

LIMITS = SummaryLimits(max_items=2, max_words=2, max_word_chars=8)
ABSTRACTS = [
    "We propose to image globular clusters to measure their ages.",
    "Strong gravitational lensing by galaxy clusters maps dark matter.",
    "Ultraviolet spectroscopy of the circumgalactic medium of nearby galaxies.",
    "A snapshot survey of planetary nebulae in the Magellanic Clouds.",
]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    model_dir = save_tiny_lm(str(tmp_path_factory.mktemp("tiny-llm")), chat_template=True)
    params = SummarizeParams(backend="vllm", model=model_dir, max_model_len=1024, gpu_memory_utilization=0.2,
                             max_items=LIMITS.max_items, max_words=LIMITS.max_words,
                             max_word_chars=LIMITS.max_word_chars)
    assert params.limits == LIMITS
    created = create_backend(params)
    yield created
    created.close()


def test_every_output_of_one_batched_call_parses_into_the_schema(backend):
    # Gibberish weights: only the grammar can make these valid, so a backend that silently
    # generated without it (outlines 1.3.0 with vLLM >= 0.12 did) fails here.
    outputs = backend.generate(ABSTRACTS, SamplingConfig(max_new_tokens=LIMITS.max_output_chars()))
    assert len(outputs) == len(ABSTRACTS)
    for raw in outputs:
        parsed = parse_output(raw, summary_model(LIMITS))
        assert parsed.reason == "ok", (parsed.detail, raw.text)
        assert raw.output_tokens > 0 and raw.input_tokens > 0 and not raw.hit_token_limit


def test_greedy_outputs_repeat(backend):
    sampling = SamplingConfig(max_new_tokens=LIMITS.max_output_chars())
    assert [o.text for o in backend.generate(ABSTRACTS, sampling)] == [o.text for o in
                                                                      backend.generate(ABSTRACTS, sampling)]
