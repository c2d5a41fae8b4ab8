"""Neuron sites: where in a transformer block the "artificial neurons" are read or edited.

Site names are the same for every model:

``mlp.inner``
    The intermediate units of the feed-forward sub-layer: the input of its output (down)
    projection, after the activation (and the gate, for gated MLPs). Width = FFN size.
``mlp.out``
    The feed-forward sub-layer's output, d_model wide, exactly what is added to the
    residual stream (after the sandwich norm where there is one). Studies A and B call
    these the neurons.
``resid``
    The block's output (the residual stream after the block; after its LayerNorm in
    post-LN encoders).
``attn.out``
    The output of the attention output projection, d_model wide (before the sandwich
    norm of Gemma-2/3 and OLMo-2, which is applied before the residual add).
``mlp.router`` (mixture-of-experts blocks only, :data:`MOE_SITE_NAMES`)
    The routing weights, n_experts wide: the weight each token gives each expert in the
    mix (after top-k and any renormalisation), 0 for experts it was not routed to.

Widths come from the modules themselves (a Linear's ``in_features``/``out_features``, a
GPT-2 Conv1D's weight, a fused experts module's 3-D weights), never from the config.

Automatic layouts
-----------------
The blocks are found at the usual attribute paths (``model.layers``, ``transformer.h``,
``encoder.layer``...). Inside a block, the attention output projection is the one
sub-module of the attention module (``self_attn``/``attn``/``attention``/
``self_attention``) named ``o_proj``, ``out_proj``, ``c_proj``, ``dense``, ``out_lin``,
``Wo`` or ``o``; the feed-forward module is ``mlp``/``ffn``/``feed_forward`` and its down
projection ``down_proj``, ``c_proj``, ``fc2``, ``dense_4h_to_h``, ``fc_out``, ``lin2``,
``Wo`` or ``w2``. Two structures have their own rule: BERT-like blocks split the FFN in
``intermediate``/``output`` (down projection ``output.dense``) and OPT puts ``fc1``/``fc2``
on the block itself. A block with ``post_feedforward_layernorm`` adds that norm's output.
Each block is resolved on its own, so models that mix MoE and dense blocks work. What
each site reads, per family (paths inside a block; "in" = the module's input):

=========================  ===================  =============================  ======================
family (model_type)        mlp.inner (in)       mlp.out                        attn.out
=========================  ===================  =============================  ======================
Llama, Mistral, Qwen2,     mlp.down_proj        mlp                            self_attn.o_proj
Qwen3, OLMo, Phi-3
Gemma-2, Gemma-3 (text),   mlp.down_proj        post_feedforward_layernorm     self_attn.o_proj [1]
OLMo-2
Phi-1/2 (phi) [2]          mlp.fc2              mlp                            self_attn.dense
GPT-2                      mlp.c_proj           mlp                            attn.c_proj
GPT-NeoX/Pythia [2]        mlp.dense_4h_to_h    mlp                            attention.dense
GPT-J [2]                  mlp.fc_out           mlp                            attn.out_proj
OPT                        fc2                  fc2 (before dropout)           self_attn.out_proj
Falcon [2]                 mlp.dense_4h_to_h    mlp (before it adds attention  self_attention.dense
                                                in place)
Mixtral, Qwen3-MoE [3]     mlp.experts          mlp (the MoE block)            self_attn.o_proj
BERT, RoBERTa, XLM-R,      output.dense         output.dense (before dropout,  attention.output.dense
ELECTRA [4]                                     add and LayerNorm)
MPNet [4]                  output.dense         output.dense                   attention.attn.o
DistilBERT [4]             ffn.lin2             ffn (before add and LayerNorm) attention.out_lin
ModernBERT                 mlp.Wo               mlp                            attn.Wo
=========================  ===================  =============================  ======================

[1] Sandwich norm: the residual gets ``post_attention_layernorm(attn.out)``.
[2] Parallel attention (GPT-NeoX with ``use_parallel_residual``, Falcon with
``parallel_attn`` or the new decoder architecture): attention and MLP read the same
block input and ``resid = input + attn.out + mlp.out``, as in the sequential pre-LN
families. Dropout is identity in eval mode everywhere.
[3] Mixture of experts, see below; ``mlp.router`` reads ``mlp.gate``.
[4] Post-LN encoders: ``resid = output.LayerNorm(mlp.out + h)`` with
``h = attention.output.LayerNorm(attn.out + input)`` (DistilBERT: ``sa_layer_norm`` and
``output_layer_norm``; MPNet: ``attention.LayerNorm``), so the sites do not add up to
``resid`` - the LayerNorm of their sum does. ``mlp.inner`` of BERT-like blocks equals the
``intermediate`` output. OPT with ``do_layer_norm_before=False`` (opt-350m) is post-LN too.

Mixture of experts
------------------
For fused experts (transformers 5: ``gate_up_proj``/``down_proj`` as 3-D parameters, as
in Mixtral, Qwen3-MoE, OLMoE) ``mlp.inner`` is n_experts x expert_ffn wide: column block
``e`` holds expert ``e``'s units (``act(gate) * up``, what its down projection reads),
**unweighted** by the router; a token's row is zero for the experts it was not routed
to. ``mlp.router`` holds the router weights, so ``mlp.out = sum_e mlp.router[e] *
down_e(mlp.inner[e])``. The units are recomputed from the experts' inputs (the fused
module has no per-expert sub-module to hook), in the same way as the model computes them;
a replacement of ``mlp.inner`` recomputes the experts' mixed output from the edited units
(edits to non-routed experts' columns have no effect), and a replacement of
``mlp.router`` changes the mixing weights of the experts already chosen (routing itself
is not changed). Blocks with a shared expert (Qwen2-MoE) are not resolved automatically:
declare a layout for them. ``mlp.router`` is not one of :data:`SITE_NAMES` (the CLI's
``--site`` takes only those; name it in a study's or a recording's site list). Neuron
sets for interventions may name it (``"L03.mlp.router"``: one unit per expert), so a
lesion of unit ``e`` removes expert ``e``'s share of ``mlp.out`` where it was routed.

Declared layouts
----------------
Anything else is described by a small table, passed as ``layout=`` to
:func:`resolve_sites`, or given to the model object once with :func:`declare_layout`
(``LoadedModel.layout``, ``brainalign record --layout PATH``) so that recordings and
interventions find the same modules::

    {"blocks": "model.layers",                       # the ModuleList of blocks
     "mlp.inner": ["mlp.down_proj", "input"],         # [path in the block, capture]
     "mlp.out": ["mlp", "output"],
     "attn.out": ["self_attn.o_proj", "output"],
     "resid": ["", "output"],                         # "" = the block; the default
     "widths": {"mlp.inner": 11008}}                  # optional, checked

Captures are ``input`` (first positional input), ``output`` (first output), ``experts``
(a fused experts module, see above) and ``router`` (a top-k router returning logits,
weights, indices). ``blocks`` may be left out when the usual paths find the blocks;
only the sites named are available. The same table can be a JSON file or a TOML file
(the whole file, or its ``[layout]`` table; quote the dotted keys:
``"mlp.inner" = ["mlp.down_proj", "input"]``), read by :func:`load_layout`.
:func:`check_layout` runs a 4-token forward pass and raises a ValueError unless every
declared module exists in every block, runs, and gives a (batch, tokens, width) tensor of
the declared width; :func:`resolve_sites` does this once per model and layout and takes
the widths from it.

Hooks
-----
:func:`site_hooks` is the one hook mechanism used by both the recorder (read values)
and interventions (replace values), in the manner of baukit's ``nethook``: a callback
receives each site's tensor, of shape ``(batch, tokens, width)``, and may return a
replacement. :class:`StopForward` lets a recorder end the forward pass after the
deepest layer it needs.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

import torch

SITE_NAMES = ("mlp.inner", "mlp.out", "resid", "attn.out")
#: Sites only mixture-of-experts blocks have (not in :data:`SITE_NAMES`, which every
#: supported block has).
MOE_SITE_NAMES = ("mlp.router",)
ALL_SITE_NAMES = SITE_NAMES + MOE_SITE_NAMES
#: How a site's tensor is taken from its module (see the module docstring).
CAPTURES = ("input", "output", "experts", "router")
Capture = Literal["input", "output", "experts", "router"]

#: Attribute paths at which the list of transformer blocks is found, first match wins.
_BLOCK_LIST_PATHS = (
    "model.layers", "layers", "model.language_model.layers", "language_model.layers",
    "transformer.h", "h", "bert.encoder.layer", "encoder.layer", "transformer.layer",
    "gpt_neox.layers", "model.decoder.layers", "decoder.layers",
)
#: Names of a block's attention sub-module, and of its output projection inside it.
_ATTENTION = ("self_attn", "attn", "attention", "self_attention")
_ATTENTION_OUT = ("o_proj", "out_proj", "c_proj", "dense", "out_lin", "Wo", "o")
#: Names of a block's feed-forward sub-module, and of its down projection inside it.
_FFN = ("mlp", "ffn", "feed_forward", "block_sparse_moe")
_DOWN = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "lin2", "Wo", "w2")
#: Last names of the modules whose output is the residual (d_model) axis: the attention
#: output and feed-forward down projections of every family above.
RESIDUAL_WRITERS = frozenset(_ATTENTION_OUT + _DOWN)

_LAYOUT_EXAMPLE = (
    "layout={'blocks': 'model.layers', 'mlp.inner': ['mlp.down_proj', 'input'], "
    "'mlp.out': ['mlp', 'output'], 'attn.out': ['self_attn.o_proj', 'output'], "
    "'resid': ['', 'output']}"
)
_HOW_TO_DECLARE = (
    "declare where the sites are with a layout: resolve_sites(model, names, layers, "
    f"{_LAYOUT_EXAMPLE}), or write the same table to a TOML/JSON file and pass it to "
    "load_layout(path) (brainalign record --layout PATH); check it with "
    "check_layout(model, layout). See the brainalign.models.sites docstring."
)


class UnsupportedModelError(NotImplementedError, ValueError):
    """brainalign cannot find the sites of this model by itself; a layout must be declared."""


@dataclass(frozen=True)
class SiteLayout:
    """Where each site lives inside a block: (submodule path, capture).

    Attributes
    ----------
    family : str
        A label: the block class for automatic layouts, ``"declared"`` (or the ``family``
        entry) for user layouts.
    places : dict
        Site name -> ``(path inside the block, capture)``; ``""`` is the block itself.
    blocks : str
        Attribute path of the model's block list; ``""`` finds it automatically.
    widths : dict
        Declared widths to check (site name -> int); empty for automatic layouts.
    """

    family: str
    places: dict[str, tuple[str, Capture]]
    blocks: str = ""
    widths: dict[str, int] | None = None

    def to_dict(self) -> dict:
        """The layout as the plain table :func:`load_layout` reads."""
        table: dict[str, Any] = {"blocks": self.blocks} if self.blocks else {}
        table.update({name: [sub, capture] for name, (sub, capture) in self.places.items()})
        if self.widths:
            table["widths"] = dict(self.widths)
        return table

    def key(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# --- automatic layouts -------------------------------------------------------------------

def _get(root: torch.nn.Module, path: str) -> torch.nn.Module | None:
    obj = root
    for part in path.split(".") if path else ():
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.nn.Module) else None


def _find(module: torch.nn.Module, candidates: Iterable[str]) -> str | None:
    """The one sub-module path whose last name is the first candidate found (or None)."""
    names = [n for n, _ in module.named_modules() if n]
    for cand in candidates:
        hits = [n for n in names if n == cand or n.endswith("." + cand)]
        if len(hits) == 1:
            return hits[0]
    return None


def _features(module: torch.nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a linear-like module (nn.Linear, GPT-2's Conv1D), else None."""
    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if hasattr(module, "nx") and hasattr(module, "nf"):  # transformers' Conv1D
        return int(module.nx), int(module.nf)
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2 and hasattr(module, "in_features"):
        return int(weight.shape[1]), int(weight.shape[0])
    return None


def _is_experts(module: torch.nn.Module | None) -> bool:
    """Fused experts: 3-D ``gate_up_proj`` and ``down_proj`` parameters (transformers 5)."""
    if module is None:
        return False
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return (isinstance(gate_up, torch.Tensor) and isinstance(down, torch.Tensor)
            and gate_up.dim() == 3 and down.dim() == 3)


def _expert_weights(experts: torch.nn.Module):
    """(gate_up (E, 2F, d), down (E, d, F), gate_up bias or None, down bias or None)."""
    if getattr(experts, "has_post_expert_norm", False) or not getattr(experts, "has_gate", True):
        raise UnsupportedModelError(
            f"{type(experts).__name__}: experts without a gate or with a post-expert norm "
            "are not supported for mlp.inner")
    gate_up, down = experts.gate_up_proj, experts.down_proj
    if getattr(experts, "is_transposed", False):
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
    has_bias = getattr(experts, "has_bias", False)
    return (gate_up, down, getattr(experts, "gate_up_proj_bias", None) if has_bias else None,
            getattr(experts, "down_proj_bias", None) if has_bias else None)


def _moe_widths(experts: torch.nn.Module) -> tuple[int, int, int]:
    """(n_experts, expert FFN width, d_model) of a fused experts module."""
    _, down, _, _ = _expert_weights(experts)
    return int(down.shape[0]), int(down.shape[2]), int(down.shape[1])


#: Norms a block may apply after a sub-layer that the automatic layouts know: Llama's
#: ``post_attention_layernorm`` (the norm before the feed-forward) and Gemma-2/3's and
#: OLMo-2's ``post_feedforward_layernorm`` (whose output is ``mlp.out``).
_KNOWN_POST_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")


def _check_residual_rule(block: torch.nn.Module, children: dict) -> None:
    """Refuse blocks that change a branch between the modules the sites read and the
    residual add in a way the automatic layouts do not know (``mlp.out`` and ``attn.out``
    would not be what is added): post-norms of other names (GLM-4's ``post_mlp_layernorm``)
    or a residual multiplier (Granite)."""
    unknown = [name for name in children if name.startswith("post_") and "norm" in name
               and name not in _KNOWN_POST_NORMS]
    multiplier = getattr(block, "residual_multiplier", None)
    if unknown or (multiplier is not None and multiplier != 1):
        what = (f"norms {unknown} after its sub-layers" if unknown
                else f"a residual multiplier ({multiplier})")
        raise UnsupportedModelError(
            f"{type(block).__name__} applies {what} before the residual add, which the "
            "automatic layouts do not know; " + _HOW_TO_DECLARE)


def _auto_block(block: torch.nn.Module) -> tuple[SiteLayout, dict[str, int]]:
    """The sites of one block, found from its sub-modules, and their widths."""
    children = dict(block.named_children())
    _check_residual_rule(block, children)
    places: dict[str, tuple[str, Capture]] = {}
    widths: dict[str, int] = {}
    d_model = None
    # attention output projection, searched inside the attention sub-module only
    attn_name = next((n for n in _ATTENTION if n in children), None)
    if attn_name is not None:
        sub = _find(children[attn_name], _ATTENTION_OUT)
        feats = _features(_get(children[attn_name], sub)) if sub else None
        if feats:
            places["attn.out"] = (f"{attn_name}.{sub}", "output")
            widths["attn.out"] = d_model = feats[1]
    # feed-forward: a sub-module (Llama, GPT-2, NeoX, DistilBERT...), BERT's
    # intermediate/output pair, or OPT's fc1/fc2 directly on the block
    ffn_name = next((n for n in _FFN if n in children), None)
    ffn = children.get(ffn_name) if ffn_name else None
    experts = getattr(ffn, "experts", None) if ffn is not None else None
    if ffn is not None and _is_experts(experts):
        if any(n.startswith("shared_expert") for n in dict(ffn.named_children())):
            raise UnsupportedModelError(
                f"{type(block).__name__}: mixture-of-experts blocks with a shared expert "
                "(Qwen2-MoE style) are not supported automatically; " + _HOW_TO_DECLARE)
        n_experts, expert_ffn, d_model = _moe_widths(experts)
        places["mlp.inner"] = (f"{ffn_name}.experts", "experts")
        widths["mlp.inner"] = n_experts * expert_ffn
        if _get(ffn, "gate") is not None:
            places["mlp.router"] = (f"{ffn_name}.gate", "router")
            widths["mlp.router"] = n_experts
        mlp_out = ffn_name
    else:
        if ffn is not None:
            down = _find(ffn, _DOWN)
            down = f"{ffn_name}.{down}" if down else None
            mlp_out = ffn_name
        elif "intermediate" in children and _get(block, "output.dense") is not None:
            down = mlp_out = "output.dense"  # BERT family: before dropout, add and LayerNorm
        else:
            down = next((n for n in _DOWN if n in children), None)  # OPT: fc2
            mlp_out = down
        feats = _features(_get(block, down)) if down else None
        if feats:
            places["mlp.inner"] = (down, "input")
            widths["mlp.inner"], d_model = feats
        else:
            mlp_out = None
    if mlp_out is not None:
        if "post_feedforward_layernorm" in children:  # Gemma-2/3, OLMo-2: norm, then add
            mlp_out = "post_feedforward_layernorm"
        places["mlp.out"] = (mlp_out, "output")
        widths["mlp.out"] = d_model
    if d_model is not None:
        places["resid"] = ("", "output")
        widths["resid"] = d_model
    return SiteLayout(type(block).__name__, places), widths


def _layout_for(block: torch.nn.Module) -> SiteLayout:
    """The automatic layout of one block (sites found from its sub-modules)."""
    return _auto_block(block)[0]


def block_list(model: torch.nn.Module, path: str | None = None) -> tuple[str, torch.nn.ModuleList]:
    """The model's list of transformer blocks and its attribute path.

    ``path`` (a layout's ``blocks`` entry) is used when given; otherwise the usual paths
    are tried, first match wins.
    """
    if path:
        obj = _get(model, path)
        if not isinstance(obj, torch.nn.ModuleList) or len(obj) == 0:
            lists = [n for n, m in model.named_modules()
                     if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
            raise ValueError(
                f"layout 'blocks': {path!r} is not a non-empty ModuleList in "
                f"{type(model).__name__}; ModuleLists there: {lists[:8]}")
        return path, obj
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{type(model).__name__} is an encoder-decoder model: its decoder reads the tokens "
            "shifted by one and attends to the whole input, so its blocks are not found "
            "automatically; " + _HOW_TO_DECLARE)
    for candidate in _BLOCK_LIST_PATHS:
        obj = _get(model, candidate)
        if isinstance(obj, torch.nn.ModuleList) and len(obj) > 0:
            return candidate, obj
    raise UnsupportedModelError(
        f"cannot find the transformer blocks of {type(model).__name__} (looked at "
        f"{', '.join(_BLOCK_LIST_PATHS)}); " + _HOW_TO_DECLARE
    )


# --- declared layouts --------------------------------------------------------------------

def load_layout(source: SiteLayout | Mapping | str | Path) -> SiteLayout:
    """A declared layout from a dict, a JSON file or a TOML file.

    The table has ``blocks`` (optional: the block list path), one entry per site,
    ``[path inside the block, capture]`` with capture one of :data:`CAPTURES`, and
    optionally ``widths`` (site -> expected width, checked by :func:`check_layout`) and
    ``family`` (a label). In a TOML file the table is the whole file or its ``[layout]``
    table; site names contain a dot so they are quoted: ``"mlp.inner" = ["mlp.down_proj",
    "input"]``. ``resid`` defaults to ``["", "output"]`` (the block's output).

    Raises
    ------
    ValueError
        For an unknown key, a malformed entry or an unreadable file.
    """
    if isinstance(source, SiteLayout):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            text = path.read_text()
        except OSError as err:
            raise ValueError(f"cannot read layout file {path}: {err}") from None
        try:
            if path.suffix.lower() == ".json":
                table = json.loads(text)
            else:
                import tomllib
                table = tomllib.loads(text)
        except (ValueError, json.JSONDecodeError) as err:
            raise ValueError(f"layout file {path} is not valid {path.suffix[1:] or 'TOML'}: "
                             f"{err}") from None
        if isinstance(table, dict) and isinstance(table.get("layout"), dict):
            table = table["layout"]
        source = table
    if not isinstance(source, Mapping):
        raise ValueError(f"a layout is a table (dict), got {type(source).__name__}")
    unknown = [k for k in source if k not in (*ALL_SITE_NAMES, "blocks", "widths", "family")]
    if unknown:
        raise ValueError(f"layout: unknown key(s) {unknown}; expected 'blocks', 'widths', "
                         f"'family' and site names {list(ALL_SITE_NAMES)}")
    blocks = source.get("blocks", "")
    if not isinstance(blocks, str):
        raise ValueError(f"layout 'blocks' must be an attribute path string, got {blocks!r}")
    places: dict[str, tuple[str, Capture]] = {}
    for name in ALL_SITE_NAMES:
        entry = source.get(name, ["", "output"] if name == "resid" else None)
        if entry is None:
            continue
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2
                or not all(isinstance(x, str) for x in entry) or entry[1] not in CAPTURES):
            raise ValueError(
                f"layout {name!r}: expected [path inside the block, capture] with capture one "
                f"of {list(CAPTURES)}, e.g. ['mlp.down_proj', 'input']; got {entry!r}")
        places[name] = (entry[0], entry[1])  # type: ignore[assignment]
    widths = source.get("widths") or {}
    if not isinstance(widths, Mapping) or not all(
            k in places and isinstance(v, int) for k, v in widths.items()):
        raise ValueError(f"layout 'widths' must map declared site names to integers, got {widths!r}")
    return SiteLayout(str(source.get("family", "declared")), places, blocks, dict(widths))


def _probe_ids(model: torch.nn.Module) -> torch.Tensor:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    vocab = int(getattr(embeddings, "num_embeddings", 0) or 0) or 16
    device = next(model.parameters()).device
    return (torch.arange(4, device=device) % max(vocab - 1, 1) + 1)[None]


def check_layout(model: torch.nn.Module, layout: SiteLayout | Mapping | str | Path,
                 input_ids: torch.Tensor | None = None) -> dict[str, tuple[int, ...]]:
    """Check a layout against one forward pass of ``model`` on a tiny input.

    Every declared module must exist in every block, run exactly once during the forward
    pass and give a ``(batch, tokens, width)`` value (or a fused-experts module / router
    for the ``experts`` / ``router`` captures); declared ``widths`` must match. A module
    that runs several times per pass (one block shared by every layer, as in ALBERT) is
    refused: a recording keeps one of its passes, while a lesion edits all of them.

    Returns
    -------
    dict
        Site name -> measured width of each block.

    Raises
    ------
    ValueError
        Naming the site, block and module at fault.
    """
    layout = load_layout(layout)
    prefix, blocks = block_list(model, layout.blocks or None)
    sites = []
    for layer, block in enumerate(blocks):
        modules = dict(block.named_modules())
        for name, (sub, capture) in layout.places.items():
            if sub not in modules:
                close = difflib.get_close_matches(sub, [m for m in modules if m], n=3)
                raise ValueError(
                    f"layout {name!r}: block {prefix}.{layer} ({type(block).__name__}) has no "
                    f"sub-module {sub!r}" + (f"; did you mean {close}?" if close else ""))
            if capture == "experts" and not _is_experts(modules[sub]):
                raise ValueError(f"layout {name!r}: {sub!r} is not a fused experts module "
                                 "(3-D gate_up_proj and down_proj), needed by capture 'experts'")
            sites.append(Site(name, layer, _join(prefix, layer, sub), capture, 0,
                              f"{prefix}.{layer}"))
    seen: dict[str, tuple] = {}
    calls: dict[str, int] = {}

    def measure(site: Site, tensor: torch.Tensor):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"layout {site.name!r}: {site.module_path} ({site.capture}) gave "
                             f"{type(tensor).__name__}, not a tensor")
        seen[site.key] = tuple(tensor.shape)
        calls[site.key] = calls.get(site.key, 0) + 1

    ids = _probe_ids(model) if input_ids is None else input_ids
    with torch.no_grad(), site_hooks(model, sites, measure):
        model(input_ids=ids)
    widths: dict[str, list[int]] = {name: [] for name in layout.places}
    for site in sites:
        shape = seen.get(site.key)
        if shape is None:
            raise ValueError(f"layout {site.name!r}: module {site.module_path} did not run "
                             "during the forward pass (is it the right module?)")
        if calls[site.key] > 1:
            raise ValueError(f"layout {site.name!r}: module {site.module_path} ran "
                             f"{calls[site.key]} times in one forward pass (a block shared by "
                             "several layers?); a site must be a module that runs once, as "
                             "recording keeps one pass and a lesion edits every pass")
        if len(shape) != 3 or shape[:2] != tuple(ids.shape):
            raise ValueError(f"layout {site.name!r}: {site.module_path} ({site.capture}) has "
                             f"shape {shape}, expected (batch, tokens, width) with batch, "
                             f"tokens = {tuple(ids.shape)}")
        expected = (layout.widths or {}).get(site.name)
        if expected is not None and shape[-1] != expected:
            raise ValueError(f"layout {site.name!r}: {site.module_path} is {shape[-1]} wide, "
                             f"the layout declares {expected}")
        widths[site.name].append(int(shape[-1]))
    return {name: tuple(values) for name, values in widths.items()}


_CHECKED: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, dict]] = weakref.WeakKeyDictionary()


def _declared_widths(model: torch.nn.Module, layout: SiteLayout) -> dict[str, tuple[int, ...]]:
    """check_layout's widths, computed once per model and layout."""
    per_model = _CHECKED.setdefault(model, {})
    key = layout.key()
    if key not in per_model:
        per_model[key] = check_layout(model, layout)
    return per_model[key]


_DECLARED: weakref.WeakKeyDictionary[torch.nn.Module, SiteLayout] = weakref.WeakKeyDictionary()


def declare_layout(model: torch.nn.Module, layout: SiteLayout | Mapping | str | Path | None
                   ) -> None:
    """Make ``layout`` this model object's sites for every later :func:`resolve_sites` that
    names no layout: recordings, lesions, evaluations and controls then edit and read the
    same modules. ``None`` forgets it (the sites are found from the modules again).
    :class:`~brainalign.models.registry.LoadedModel` calls this when its ``layout`` is set.
    """
    if layout is None:
        _DECLARED.pop(model, None)
        return
    declared = load_layout(layout)
    _declared_widths(model, declared)  # checked now, not at the first lesion
    _DECLARED[model] = declared


def declared_layout(model: torch.nn.Module) -> SiteLayout | None:
    """The layout :func:`declare_layout` gave this model object, if any."""
    return _DECLARED.get(model)


# --- interventions in force ----------------------------------------------------------------

_ACTIVE_EDITS: weakref.WeakKeyDictionary[torch.nn.Module, list[dict]] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def edit_in_force(model: torch.nn.Module, description: Mapping) -> Iterator[None]:
    """Register an edit of ``model`` (a lesion, a scaled region...) while the context is
    open, so that what the model computes can be told apart from the intact model's: the
    recorder puts :func:`active_edits` into a recording's settings (its hash and
    provenance), and a recording made under another edit, or none, is never reused.

    ``description`` must be JSON-able and identify the edit (mode, value, a hash of the
    edited units).
    """
    entry = dict(description)
    edits = _ACTIVE_EDITS.setdefault(model, [])
    edits.append(entry)
    try:
        yield
    finally:  # this context's own entry, even when an equal edit is nested in it
        del edits[next(i for i, e in enumerate(edits) if e is entry)]


def active_edits(model: torch.nn.Module) -> list[dict]:
    """Descriptions of the edits in force on ``model``, in the order they were entered."""
    return [dict(e) for e in _ACTIVE_EDITS.get(model, [])]


# --- sites -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Site:
    """One neuron site in one layer.

    Attributes
    ----------
    name : str
        One of :data:`SITE_NAMES` (or :data:`MOE_SITE_NAMES`).
    layer : int
        Block index, 0-based.
    module_path : str
        Full attribute path of the hooked module inside the model.
    capture : {"input", "output", "experts", "router"}
        The module's first input, its (first) output, the units of a fused experts module
        or the routing weights of a router (see the module docstring).
    width : int
        Number of neurons at this site.
    block_path : str
        Full path of the block; its input gives (batch, tokens) to modules that see the
        tokens flattened (OPT's fc1/fc2, MoE experts).
    """

    name: str
    layer: int
    module_path: str
    capture: Capture
    width: int
    block_path: str = ""

    @property
    def key(self) -> str:
        """Stable identifier, e.g. ``"L03.mlp.out"``."""
        return f"L{self.layer:02d}.{self.name}"


def _join(prefix: str, layer: int, sub: str) -> str:
    return f"{prefix}.{layer}" + (f".{sub}" if sub else "")


def resolve_sites(
    model: torch.nn.Module,
    site_names: Iterable[str],
    layers: Iterable[int] | None = None,
    layout: SiteLayout | Mapping | str | Path | None = None,
) -> list[Site]:
    """Sites for the given names and layers (all layers by default), ordered by layer.

    Parameters
    ----------
    layout : dict, SiteLayout or path, optional
        A declared layout (see :func:`load_layout`); checked once per model with
        :func:`check_layout`, which also measures the widths. Default: the layout
        :func:`declare_layout` gave this model, else found from the block's sub-modules.

    Notes
    -----
    ``mlp.router`` exists only in mixture-of-experts blocks; with ``layers=None`` the
    blocks without it (dense layers of a mixed model) are left out for that name.

    Raises
    ------
    ValueError
        For an unknown site name, a layer outside ``[0, n_layers)``, a site a block does
        not have, or a declared layout that does not fit the model.
    UnsupportedModelError
        When the sites cannot be found automatically (the message says how to declare a
        layout); also a ValueError.
    """
    declared = load_layout(layout) if layout is not None else _DECLARED.get(model)
    prefix, blocks = block_list(model, declared.blocks or None if declared else None)
    n_layers = len(blocks)
    site_names = list(dict.fromkeys(site_names))  # a repeated name is recorded once
    unknown = [s for s in site_names if s not in ALL_SITE_NAMES]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; expected any of {list(ALL_SITE_NAMES)}")
    all_layers = layers is None
    layer_list = list(range(n_layers)) if layers is None else sorted(set(int(i) for i in layers))
    bad = [i for i in layer_list if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    if declared is not None:
        missing = [s for s in site_names if s not in declared.places]
        if missing:
            raise ValueError(f"site(s) {missing} are not in the declared layout (it has "
                             f"{list(declared.places)})")
        measured = _declared_widths(model, declared)
    sites = []
    for layer in layer_list:
        if declared is not None:
            places = declared.places
            widths = {name: measured[name][layer] for name in places}
        else:
            # each block on its own: a model may mix MoE and dense blocks of one class
            # (Qwen3-MoE's mlp_only_layers)
            found, widths = _auto_block(blocks[layer])
            places = found.places
        for name in site_names:
            if name not in places:
                if all_layers and name in MOE_SITE_NAMES:
                    continue
                raise UnsupportedModelError(
                    f"site {name!r} not found in block {prefix}.{layer} "
                    f"({type(blocks[layer]).__name__}); found {sorted(places)}. "
                    + _HOW_TO_DECLARE)
            sub, capture = places[name]
            sites.append(Site(name, layer, _join(prefix, layer, sub), capture, widths[name],
                              f"{prefix}.{layer}"))
    return sites


def _first_tensor(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


class StopForward(Exception):
    """Raised inside a hook to end the forward pass once the deepest needed site ran."""


SiteCallback = Callable[[Site, torch.Tensor], "torch.Tensor | None"]


def _expert_units(experts: torch.nn.Module, hidden: torch.Tensor,
                  index: torch.Tensor) -> torch.Tensor:
    """(n_tokens, n_experts, expert_ffn): each routed expert's units, zeros elsewhere."""
    gate_up, down, gate_up_bias, _ = _expert_weights(experts)
    n_experts, expert_ffn = down.shape[0], down.shape[2]
    units = hidden.new_zeros(hidden.shape[0], n_experts, expert_ffn)
    for expert in index.unique().tolist():
        if not 0 <= expert < n_experts:  # out-of-range ids mark "no expert" (expert parallel)
            continue
        tokens = (index == expert).any(dim=-1).nonzero().squeeze(-1)
        projected = torch.nn.functional.linear(
            hidden[tokens], gate_up[expert],
            None if gate_up_bias is None else gate_up_bias[expert])
        if hasattr(experts, "_apply_gate"):
            values = experts._apply_gate(projected)
        else:
            gate, up = projected.chunk(2, dim=-1)
            values = experts.act_fn(gate) * up
        units[tokens, expert] = values.to(units.dtype)
    return units


def _experts_output(experts: torch.nn.Module, units: torch.Tensor, index: torch.Tensor,
                    weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The experts' mixed output recomputed from (edited) units, as the model mixes them."""
    _, down, _, down_bias = _expert_weights(experts)
    out = torch.zeros_like(like)
    for expert in index.unique().tolist():
        if not 0 <= expert < down.shape[0]:
            continue
        slot, tokens = torch.where(index.T == expert)
        values = torch.nn.functional.linear(
            units[tokens, expert].to(down.dtype), down[expert],
            None if down_bias is None else down_bias[expert])
        values = values * weights[tokens, slot, None]
        out.index_add_(0, tokens, values.to(out.dtype))
    return out


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
    removed when the context exits, whatever happens inside it. The callback must copy
    what it keeps: some models change a module's output in place afterwards (Falcon adds
    the attention output to the MLP output tensor).

    Parameters
    ----------
    stop_after : Site, optional
        After this site's callback, :class:`StopForward` is raised so that deeper layers
        are not computed; the caller catches it (see ``brainalign.record``).
    """
    modules = dict(model.named_modules())
    handles = []
    shapes: dict[str, tuple[int, int]] = {}  # block path -> (batch, tokens) of its input
    hooked_blocks: set[str] = set()

    def as_3d(site: Site, tensor: torch.Tensor) -> torch.Tensor:
        lead = shapes.get(site.block_path)
        if tensor.dim() == 2 and lead is not None and tensor.shape[0] == lead[0] * lead[1]:
            return tensor.view(lead[0], lead[1], tensor.shape[-1])
        return tensor

    def call(site: Site, tensor: torch.Tensor):
        replaced = callback(site, tensor)
        if site == stop_after:
            raise StopForward(site.key)
        return replaced

    def block_hook(path: str):
        def on_block(module, args, kwargs):
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor) and hidden.dim() == 3:
                shapes[path] = tuple(hidden.shape[:2])
        return on_block

    def make_hook(site: Site):
        def on_input(module, args, kwargs):
            if args:
                original = args[0]
            else:  # called with keywords only: the first tensor argument
                key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
                original = kwargs[key]
            replaced = call(site, as_3d(site, original))
            if replaced is None:
                return None
            replaced = replaced.reshape(original.shape)
            if args:
                return (replaced, *args[1:]), kwargs
            return args, {**kwargs, key: replaced}

        def on_output(module, args, output):
            original = _first_tensor(output)
            replaced = call(site, as_3d(site, original))
            if replaced is None:
                return None
            replaced = replaced.reshape(original.shape)
            if isinstance(output, tuple):
                return (replaced, *output[1:])
            return replaced

        def on_experts(module, args, kwargs, output):
            values = list(args) + [kwargs[k] for k in ("hidden_states", "top_k_index",
                                                       "top_k_weights") if k in kwargs]
            hidden, index, weights = values[:3]
            units = _expert_units(module, hidden, index)
            flat = units.reshape(units.shape[0], -1)
            replaced = call(site, as_3d(site, flat))
            if replaced is None:
                return None
            edited = replaced.reshape(units.shape)
            return _experts_output(module, edited, index, weights, output)

        def on_router(module, args, output):
            if not (isinstance(output, tuple) and len(output) == 3):
                raise ValueError(f"site {site.key}: router {site.module_path} should return "
                                 "(logits, top-k weights, top-k indices)")
            logits, scores, index = output
            dense = scores.new_zeros(scores.shape[0], site.width).scatter(1, index, scores)
            replaced = call(site, as_3d(site, dense))
            if replaced is None:
                return None
            new_scores = replaced.reshape(dense.shape).gather(1, index).to(scores.dtype)
            return logits, new_scores, index

        return on_input, on_output, on_experts, on_router

    try:
        for site in sites:
            if site.module_path not in modules:
                raise KeyError(f"site {site.key}: module {site.module_path!r} not in the model")
            if site.block_path in modules and site.block_path not in hooked_blocks:
                hooked_blocks.add(site.block_path)
                handles.append(modules[site.block_path].register_forward_pre_hook(
                    block_hook(site.block_path), with_kwargs=True))
            module = modules[site.module_path]
            on_input, on_output, on_experts, on_router = make_hook(site)
            if site.capture == "input":
                handles.append(module.register_forward_pre_hook(on_input, with_kwargs=True))
            elif site.capture == "output":
                handles.append(module.register_forward_hook(on_output))
            elif site.capture == "experts":
                handles.append(module.register_forward_hook(on_experts, with_kwargs=True))
            elif site.capture == "router":
                handles.append(module.register_forward_hook(on_router))
            else:
                raise ValueError(f"site {site.key}: unknown capture {site.capture!r}")
        yield
    finally:
        for handle in handles:
            handle.remove()
