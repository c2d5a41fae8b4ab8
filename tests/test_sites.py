"""Neuron sites read exactly what the unhooked model computes, for every family, site, layer.

The reference is the model's own forward pass without hooks (``output_hidden_states``)
plus each block's sub-modules applied by hand: for every layer the feed-forward units are
recomputed from the unhooked residual stream, pushed through the down projection, and
added back; the sum must reproduce the next unhooked hidden state.  A hook reading the
wrong module or the wrong side of it breaks one of these equalities.
"""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, tiny_model

from brainalign.models.sites import (SITE_NAMES, StopForward, block_list, resolve_sites,
                                     site_hooks)

TOLERANCE = 1e-5
N_LAYERS = 3


def _inputs(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 128, (2, 12), generator=generator)


def _record(model, sites, input_ids, **kwargs):
    recorded = {}

    def keep(site, tensor):
        recorded[site.key] = tensor.detach().clone()

    with torch.no_grad(), site_hooks(model, sites, keep, **kwargs):
        output = model(input_ids, output_hidden_states=True)
    return recorded, output


def _final_norm(model) -> torch.nn.Module | None:
    """The norm applied after the last block (causal models), None for BERT."""
    for path in ("model.norm", "transformer.ln_f"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None:
            return obj
    return None


def _block_by_hand(family: str, block, resid_in, attn_out):
    """Feed-forward units, FFN output and block output recomputed from the block's input.

    ``resid_in`` is the unhooked residual stream entering the block and ``attn_out`` the
    attention output projection read by the hook; everything after it is recomputed with
    the block's own sub-modules.
    """
    if family in ("llama", "mistral", "qwen2"):
        mid = resid_in + attn_out
        x = block.post_attention_layernorm(mid)
        inner = block.mlp.act_fn(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)
        mlp_out = block.mlp.down_proj(inner)
        return inner, mlp_out, mid + mlp_out
    if family == "gemma3":
        mid = resid_in + block.post_attention_layernorm(attn_out)
        x = block.pre_feedforward_layernorm(mid)
        inner = block.mlp.act_fn(block.mlp.gate_proj(x)) * block.mlp.up_proj(x)
        mlp_out = block.post_feedforward_layernorm(block.mlp.down_proj(inner))
        return inner, mlp_out, mid + mlp_out
    if family == "gpt2":
        mid = resid_in + attn_out
        inner = block.mlp.act(block.mlp.c_fc(block.ln_2(mid)))
        mlp_out = block.mlp.c_proj(inner)
        return inner, mlp_out, mid + mlp_out
    if family == "bert":
        attended = block.attention.output.LayerNorm(attn_out + resid_in)
        inner = block.intermediate.intermediate_act_fn(block.intermediate.dense(attended))
        mlp_out = block.output.dense(inner)
        return inner, mlp_out, block.output.LayerNorm(mlp_out + attended)
    raise ValueError(family)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.mark.parametrize("family", FAMILIES)
def test_widths_and_shapes(family):
    model = tiny_model(family)
    sites = resolve_sites(model, SITE_NAMES)
    assert len(sites) == N_LAYERS * len(SITE_NAMES)
    recorded, _ = _record(model, sites, _inputs())
    ffn = 128 if family == "gpt2" else 48
    for site in sites:
        assert site.width == (ffn if site.name == "mlp.inner" else 32)
        assert recorded[site.key].shape == (2, 12, site.width), site.key


@pytest.mark.parametrize("family", FAMILIES)
def test_recorded_values_equal_unhooked_model(family):
    model = tiny_model(family)
    input_ids = _inputs()
    with torch.no_grad():
        plain = model(input_ids, output_hidden_states=True)
    recorded, hooked = _record(model, resolve_sites(model, SITE_NAMES), input_ids)
    hidden = plain.hidden_states  # embeddings, then each block's output
    _, blocks = block_list(model)
    norm = _final_norm(model)
    for layer, block in enumerate(blocks):
        key = f"L{layer:02d}"
        resid = recorded[f"{key}.resid"]
        # resid: the block output, before the final norm for the last block of causal models
        if layer < N_LAYERS - 1 or norm is None:
            assert _max_diff(resid, hidden[layer + 1]) <= TOLERANCE, key
        else:
            with torch.no_grad():
                assert _max_diff(norm(resid), hidden[layer + 1]) <= TOLERANCE, key
        with torch.no_grad():
            inner, mlp_out, block_out = _block_by_hand(family, block, hidden[layer],
                                                       recorded[f"{key}.attn.out"])
        assert _max_diff(recorded[f"{key}.mlp.inner"], inner) <= TOLERANCE, key
        assert _max_diff(recorded[f"{key}.mlp.out"], mlp_out) <= TOLERANCE, key
        # the residual identity closes on the unhooked stream, which pins attn.out down too
        assert _max_diff(block_out, resid) <= TOLERANCE, key
    # recording leaves the model's outputs exactly as they were
    final = "logits" if hasattr(plain, "logits") else "last_hidden_state"
    assert torch.equal(getattr(plain, final), getattr(hooked, final))


@pytest.mark.parametrize("family", FAMILIES)
def test_mlp_inner_through_down_projection_is_mlp_out(family):
    model = tiny_model(family)
    recorded, _ = _record(model, resolve_sites(model, ["mlp.inner", "mlp.out"]), _inputs(2))
    _, blocks = block_list(model)
    for layer, block in enumerate(blocks):
        inner = recorded[f"L{layer:02d}.mlp.inner"]
        with torch.no_grad():
            if family == "gpt2":
                projected = block.mlp.c_proj(inner)
            elif family == "bert":
                projected = block.output.dense(inner)
            else:
                projected = block.mlp.down_proj(inner)
                if family == "gemma3":
                    projected = block.post_feedforward_layernorm(projected)
        assert _max_diff(projected, recorded[f"L{layer:02d}.mlp.out"]) <= TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_forward_after_deepest_site(family):
    model = tiny_model(family)
    input_ids = _inputs(3)
    full, _ = _record(model, resolve_sites(model, SITE_NAMES), input_ids)
    sites = resolve_sites(model, ["mlp.inner", "resid"], layers=[0, 1])
    partial = {}

    def keep(site, tensor):
        partial[site.key] = tensor.detach().clone()

    with torch.no_grad(), site_hooks(model, sites, keep, stop_after=sites[-1]):
        with pytest.raises(StopForward):
            model(input_ids)
    assert sorted(partial) == sorted(site.key for site in sites)
    for key, value in partial.items():
        assert torch.equal(value, full[key])


@pytest.mark.parametrize("family", FAMILIES)
def test_replacement_changes_only_downstream(family):
    """Returning a tensor replaces the site's value: zeroed FFN output leaves resid = mid."""
    model = tiny_model(family)
    input_ids = _inputs(4)
    with torch.no_grad():
        plain = model(input_ids, output_hidden_states=True)
    layer = 1
    sites = resolve_sites(model, SITE_NAMES, layers=[layer])
    seen = {}

    def zero_mlp_out(site, tensor):
        seen[site.name] = tensor.detach().clone()
        return torch.zeros_like(tensor) if site.name == "mlp.out" else None

    with torch.no_grad(), site_hooks(model, sites, zero_mlp_out):
        model(input_ids)
    _, blocks = block_list(model)
    block, resid_in, attn_out = blocks[layer], plain.hidden_states[layer], seen["attn.out"]
    with torch.no_grad():
        if family == "bert":
            attended = block.attention.output.LayerNorm(attn_out + resid_in)
            expected = block.output.LayerNorm(attended)
        elif family == "gemma3":
            expected = resid_in + block.post_attention_layernorm(attn_out)
        else:
            expected = resid_in + attn_out
    assert _max_diff(seen["resid"], expected) <= TOLERANCE
    # and nothing upstream of the edit moved
    assert _max_diff(attn_out, _record(model, sites, input_ids)[0][f"L{layer:02d}.attn.out"]) == 0


def test_hooks_removed_after_exception():
    model = tiny_model("llama")
    sites = resolve_sites(model, ["mlp.out"])
    calls = []
    with pytest.raises(RuntimeError):
        with site_hooks(model, sites, lambda site, tensor: calls.append(site.key)):
            raise RuntimeError("boom")
    with torch.no_grad():
        model(_inputs())
    assert calls == []


def test_bad_site_and_layer_names():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="unknown site"):
        resolve_sites(model, ["mlp.hidden"])
    with pytest.raises(ValueError, match="out of range"):
        resolve_sites(model, ["resid"], layers=[3])
