"""Neuron sites: where in a transformer block the "artificial neurons" are read or edited.

Site names are defined once, per architecture family, here:

``mlp.inner``
    The intermediate units of the feed-forward sub-layer: the input of the down
    projection (Llama/Mistral/Qwen2/Gemma ``mlp.down_proj``, GPT-2 ``mlp.c_proj``), or
    BERT's ``intermediate`` output (after the activation). Width = FFN size.
``mlp.out``
    The feed-forward sub-layer's output, d_model wide, exactly what is added to the
    residual stream (Llama ``mlp`` output; Gemma-2/3 ``post_feedforward_layernorm``
    output, since that norm sits before the residual add; GPT-2 ``mlp`` output; BERT
    ``output.dense`` output, before dropout, residual add and LayerNorm). Studies A and B
    call these the neurons.
``resid``
    The block's output (the residual stream after the block).
``attn.out``
    The attention output projection (``o_proj``, GPT-2 ``attn.c_proj``, BERT
    ``attention.output.dense``).

:func:`site_hooks` is the one hook mechanism used by both the recorder (read values)
and interventions (replace values), in the manner of baukit's ``nethook``: a callback
receives each site's tensor, of shape ``(batch, tokens, width)``, and may return a
replacement. :class:`StopForward` lets a recorder end the forward pass after the
deepest layer it needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal

import torch

SITE_NAMES = ("mlp.inner", "mlp.out", "resid", "attn.out")

#: Attribute paths at which the list of transformer blocks is found, first match wins.
_BLOCK_LIST_PATHS = (
    "model.layers", "layers", "model.language_model.layers", "language_model.layers",
    "transformer.h", "h", "bert.encoder.layer", "encoder.layer",
    "gpt_neox.layers", "model.decoder.layers",
)


@dataclass(frozen=True)
class SiteLayout:
    """Where each site lives inside one block: (submodule path, "input" or "output")."""

    family: str
    places: dict[str, tuple[str, Literal["input", "output"]]]


def _layout_for(block: torch.nn.Module) -> SiteLayout:
    """Recognise the block's family from its submodules (robust to model_type aliases)."""
    names = dict(block.named_modules())
    if "mlp.down_proj" in names and "self_attn.o_proj" in names:
        mlp_out = ("post_feedforward_layernorm", "output") if (
            "post_feedforward_layernorm" in names) else ("mlp", "output")
        return SiteLayout("llama" if mlp_out[0] == "mlp" else "gemma", {
            "mlp.inner": ("mlp.down_proj", "input"),
            "mlp.out": mlp_out,
            "resid": ("", "output"),
            "attn.out": ("self_attn.o_proj", "output"),
        })
    if "mlp.c_proj" in names and "attn.c_proj" in names:
        return SiteLayout("gpt2", {
            "mlp.inner": ("mlp.c_proj", "input"),
            "mlp.out": ("mlp", "output"),
            "resid": ("", "output"),
            "attn.out": ("attn.c_proj", "output"),
        })
    if "intermediate" in names and "output.dense" in names and "attention.output.dense" in names:
        return SiteLayout("bert", {
            "mlp.inner": ("intermediate", "output"),
            "mlp.out": ("output.dense", "output"),
            "resid": ("", "output"),
            "attn.out": ("attention.output.dense", "output"),
        })
    raise NotImplementedError(
        f"unrecognised transformer block {type(block).__name__}: brainalign knows the "
        "Llama/Mistral/Qwen2/Gemma, GPT-2 and BERT block layouts"
    )


def block_list(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's list of transformer blocks and its attribute path."""
    for path in _BLOCK_LIST_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
            return path, obj
    raise NotImplementedError(
        f"cannot find the transformer blocks of {type(model).__name__} (looked at "
        f"{', '.join(_BLOCK_LIST_PATHS)})"
    )


@dataclass(frozen=True)
class Site:
    """One neuron site in one layer.

    Attributes
    ----------
    name : str
        One of :data:`SITE_NAMES`.
    layer : int
        Block index, 0-based.
    module_path : str
        Full attribute path of the hooked module inside the model.
    capture : {"input", "output"}
        Whether the neurons are the module's first input or its output.
    width : int
        Number of neurons at this site.
    """

    name: str
    layer: int
    module_path: str
    capture: Literal["input", "output"]
    width: int

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``"L03.mlp.out"``."""
        return f"L{self.layer:02d}.{self.name}"


def _width(model: torch.nn.Module, site_name: str) -> int:
    config = model.config
    config = getattr(config, "text_config", None) or config
    if site_name == "mlp.inner":
        for attr in ("intermediate_size", "n_inner"):
            value = getattr(config, attr, None)
            if value:
                return int(value)
        return 4 * int(config.hidden_size)  # GPT-2 leaves n_inner unset: 4 x d_model
    return int(config.hidden_size)


def resolve_sites(
    model: torch.nn.Module,
    site_names: Iterable[str],
    layers: Iterable[int] | None = None,
) -> list[Site]:
    """Sites for the given names and layers (all layers by default), ordered by layer.

    Raises
    ------
    ValueError
        For an unknown site name or a layer outside ``[0, n_layers)``.
    """
    prefix, blocks = block_list(model)
    n_layers = len(blocks)
    site_names = list(site_names)
    unknown = [s for s in site_names if s not in SITE_NAMES]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; expected any of {list(SITE_NAMES)}")
    layer_list = list(range(n_layers)) if layers is None else sorted(set(int(i) for i in layers))
    bad = [i for i in layer_list if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    layout = _layout_for(blocks[0])
    sites = []
    for layer in layer_list:
        for name in site_names:
            sub, capture = layout.places[name]
            path = f"{prefix}.{layer}" + (f".{sub}" if sub else "")
            sites.append(Site(name, layer, path, capture, _width(model, name)))
    return sites


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once the deepest needed site ran."""


SiteCallback = Callable[[Site, torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def site_hooks(
    model: torch.nn.Module,
    sites: Iterable[Site],
    callback: SiteCallback,
    stop_after: Site | None = None,
) -> Iterator[None]:
    """Call ``callback(site, tensor)`` on every site during forward passes.

    ``tensor`` has shape ``(batch, tokens, width)``. If the callback returns a tensor of
    the same shape it replaces the site's value for the rest of the forward pass (an
    intervention); returning ``None`` leaves the model untouched (a recording). Hooks are
    removed when the context exits, whatever happens inside it.

    Parameters
    ----------
    stop_after : Site, optional
        After this site's callback, :class:`StopForward` is raised so that deeper layers
        are not computed; the caller catches it (see ``brainalign.record``).
    """
    modules = dict(model.named_modules())
    handles = []

    def make_hook(site: Site):
        def on_input(module, args, kwargs):
            replaced = callback(site, args[0])
            if site == stop_after:
                raise StopForward(site.key)
            if replaced is not None:
                return (replaced, *args[1:]), kwargs
            return None

        def on_output(module, args, output):
            replaced = callback(site, _first_tensor(output))
            if site == stop_after:
                raise StopForward(site.key)
            if replaced is None:
                return None
            if isinstance(output, tuple):
                return (replaced, *output[1:])
            return replaced

        return on_input, on_output

    try:
        for site in sites:
            if site.module_path not in modules:
                raise KeyError(f"site {site.key}: module {site.module_path!r} not in the model")
            module = modules[site.module_path]
            on_input, on_output = make_hook(site)
            if site.capture == "input":
                handles.append(module.register_forward_pre_hook(on_input, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(on_output))
        yield
    finally:
        for handle in handles:
            handle.remove()
