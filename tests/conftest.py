"""Shared test fixtures: tiny models built from configs, real-data paths that skip cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BRAINALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def single_thread():
    """One torch and one BLAS thread: small problems run far faster so on a shared 2-core
    machine. Modules opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    import threadpoolctl

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; the calling test is skipped when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


def tiny_config(family: str):
    """A transformers config for a 3-layer model of the given family (no download)."""
    from transformers import (BertConfig, Gemma3TextConfig, GPT2Config, LlamaConfig,
                              MistralConfig, Qwen2Config)

    common = dict(vocab_size=128, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=256)
    if family == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if family == "mistral":
        return MistralConfig(num_key_value_heads=2, sliding_window=None, **common)
    if family == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common)
    if family == "gemma3":
        return Gemma3TextConfig(num_key_value_heads=2, head_dim=8, sliding_window=16, **common)
    if family == "gpt2":
        return GPT2Config(vocab_size=128, n_embd=32, n_layer=3, n_head=4, n_positions=256)
    if family == "bert":
        return BertConfig(**common)
    raise ValueError(family)


FAMILIES = ("llama", "mistral", "qwen2", "gemma3", "gpt2", "bert")


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised tiny model of the family, in eval mode, float32."""
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(family)
    auto = AutoModel if family == "bert" else AutoModelForCausalLM
    return auto.from_config(config).eval()


def model_or_skip(name: str):
    """A registry model loaded on CPU, or skip the test when its package is not installed."""
    from brainalign.models.registry import ModelNotInstalledError, is_installed, load_model

    if not is_installed(name):
        pytest.skip(f"model {name} not installed (make install)")
    try:
        return load_model(name)
    except ModelNotInstalledError as err:
        pytest.skip(str(err))


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
