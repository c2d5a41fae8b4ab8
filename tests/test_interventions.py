"""Neuron interventions: lesion, keep-only, scale, add; NeuronSet; matched controls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_model

from brainalign.interventions import (ActivationStatistics, NeuronSet, activation_statistics, add, count_matched, keep_only,
                                      layer_matched, lesion, magnitude_matched, matched_controls, scale, token_activations,
                                      universe_table)
from brainalign.interventions.controls import _membership
from brainalign.models.sites import resolve_sites, site_hooks
from brainalign.record.neurons import NeuronTable

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


def record(model, site_names, layers=None):
    """Site values of one forward pass, by key (recording through the same hook mechanism)."""
    sites = resolve_sites(model, site_names, layers)
    values = {}

    def keep(site, tensor):
        values[site.key] = tensor.detach().clone()

    with torch.no_grad(), site_hooks(model, sites, keep):
        out = model(input_ids=IDS)
    return values, out


def record_ids(model, ids, site_names):
    sites = resolve_sites(model, site_names)
    values = {}
    with torch.no_grad(), site_hooks(model, sites, lambda s, t: values.__setitem__(s.key, t.clone())):
        model(input_ids=ids[None])
    return values, sites


def output_tensor(out):
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert"])
@pytest.mark.parametrize("site_name", ["mlp.out", "mlp.inner"])
def test_lesioned_neuron_reads_zero_and_others_untouched(family, site_name):
    model = tiny_model(family)
    base, base_out = record(model, [site_name])
    neuron_set = NeuronSet({f"L01.{site_name}": [0, 5, 7]})
    with lesion(model, neuron_set):
        edited, edited_out = record(model, [site_name])
    assert torch.all(edited[f"L01.{site_name}"][..., [0, 5, 7]] == 0)
    assert torch.any(base[f"L01.{site_name}"][..., [0, 5, 7]] != 0)
    others = [u for u in range(base[f"L01.{site_name}"].shape[-1]) if u not in (0, 5, 7)]
    assert torch.equal(edited[f"L01.{site_name}"][..., others], base[f"L01.{site_name}"][..., others])
    assert torch.equal(edited[f"L00.{site_name}"], base[f"L00.{site_name}"])  # upstream untouched
    assert not torch.equal(edited[f"L02.{site_name}"], base[f"L02.{site_name}"])  # effect propagates
    assert not torch.allclose(output_tensor(edited_out), output_tensor(base_out))


def test_inner_lesion_equals_zeroed_down_projection_columns():
    """Reference computed without hooks: zeroing down_proj input columns of the weight."""
    model = tiny_model("llama")
    units = [2, 9, 40]
    with torch.no_grad(), lesion(model, NeuronSet({"L02.mlp.inner": units})):
        hooked = model(input_ids=IDS).logits
    reference = tiny_model("llama")
    with torch.no_grad():
        reference.model.layers[2].mlp.down_proj.weight[:, units] = 0
        expected = reference(input_ids=IDS).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)


def test_mlp_out_lesion_equals_zeroed_down_projection_rows():
    model = tiny_model("llama")
    units = [1, 30]
    with torch.no_grad(), lesion(model, NeuronSet({"L00.mlp.out": units})):
        hooked = model(input_ids=IDS).logits
    reference = tiny_model("llama")
    with torch.no_grad():
        reference.model.layers[0].mlp.down_proj.weight[units, :] = 0
        expected = reference(input_ids=IDS).logits
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)


def test_keep_only_zeroes_every_other_neuron():
    model = tiny_model("llama")
    base, _ = record(model, ["mlp.out"])
    kept = NeuronSet({"L00.mlp.out": [3, 4], "L02.mlp.out": [10]})
    with keep_only(model, kept):
        edited, _ = record(model, ["mlp.out"])
    for key, value in edited.items():
        keep_units = kept.units.get(key, np.array([], dtype=int))
        others = [u for u in range(32) if u not in keep_units]
        assert torch.all(value[..., others] == 0), key
        assert torch.all(value[..., keep_units] != 0), key
    assert torch.equal(edited["L00.mlp.out"][..., [3, 4]], base["L00.mlp.out"][..., [3, 4]])
    assert torch.all(edited["L01.mlp.out"] == 0)  # a layer with no kept unit is silenced
    # the empty set: its own sites are none, so without a universe it would edit nothing
    with pytest.raises(ValueError, match="empty neuron set"):
        with keep_only(model, NeuronSet({})):
            pass
    with keep_only(model, NeuronSet({}), universe=["mlp.out"]):
        silenced, _ = record(model, ["mlp.out"])
    assert all(torch.all(value == 0) for value in silenced.values())


def test_scale_add_exact_and_compose_in_entry_order():
    model = tiny_model("qwen2")
    base, _ = record(model, ["mlp.out"])
    neuron_set = NeuronSet({"L00.mlp.out": [0, 1, 2]})
    with scale(model, neuron_set, 3.0):
        scaled, _ = record(model, ["mlp.out"])
    with add(model, neuron_set, 0.5):
        added, _ = record(model, ["mlp.out"])
    with scale(model, neuron_set, 2.0), add(model, neuron_set, 1.0):
        both, _ = record(model, ["mlp.out"])
    x = base["L00.mlp.out"][..., :3]
    assert torch.equal(scaled["L00.mlp.out"][..., :3], x * 3.0)
    assert torch.equal(added["L00.mlp.out"][..., :3], x + 0.5)
    assert torch.equal(both["L00.mlp.out"][..., :3], x * 2.0 + 1.0)
    assert torch.equal(both["L00.mlp.out"][..., 3:], base["L00.mlp.out"][..., 3:])


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "bert"])
def test_outputs_restored_bit_for_bit_after_context_and_exception(family):
    model = tiny_model(family)
    with torch.no_grad():
        before = output_tensor(model(input_ids=IDS)).clone()
    neuron_set = NeuronSet({"L00.mlp.out": [0], "L02.resid": [1, 2]})
    with lesion(model, neuron_set), scale(model, neuron_set, 5.0), keep_only(model, neuron_set):
        pass
    with pytest.raises(RuntimeError, match="inside"):
        with add(model, neuron_set, 1.0):
            raise RuntimeError("failure inside the context")
    with torch.no_grad():
        after = output_tensor(model(input_ids=IDS))
    assert torch.equal(before, after)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_unit_out_of_range_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="has 32 units"):
        with lesion(model, NeuronSet({"L00.mlp.out": [32]})):
            pass


def test_neuron_set_from_table_union_and_layer_distribution():
    table = NeuronTable.from_sites([(0, "mlp.out", 4), (1, "mlp.out", 4), (1, "mlp.inner", 6)])
    mask = np.zeros(len(table), dtype=bool)
    mask[[1, 2, 5, 9]] = True  # L00 units 1,2; L01 mlp.out unit 1; L01 mlp.inner unit 1
    neuron_set = NeuronSet.from_table(table, mask, name="a")
    assert neuron_set.units.keys() == {"L00.mlp.out", "L01.mlp.out", "L01.mlp.inner"}
    assert neuron_set.units["L00.mlp.out"].tolist() == [1, 2]
    assert neuron_set.size == 4
    assert neuron_set.layer_distribution() == {("mlp.out", 0): 2, ("mlp.out", 1): 1, ("mlp.inner", 1): 1}
    assert neuron_set.layer_histogram(3).tolist() == [2, 2, 0]
    other = NeuronSet({"L00.mlp.out": [2, 3], "L02.mlp.out": [0]})
    union = neuron_set | other
    assert union.size == 6 and union.units["L00.mlp.out"].tolist() == [1, 2, 3]
    assert neuron_set.difference(other).size == 3
    assert NeuronSet.from_dict(union.to_dict()).to_dict() == union.to_dict()
    back = NeuronSet.from_table(neuron_set.to_table(), np.ones(4, dtype=bool))
    assert back.to_dict()["units"] == neuron_set.to_dict()["units"]
    with pytest.raises(ValueError, match="bad site key"):
        NeuronSet({"layer3.mlp": [1]})
    with pytest.raises(ValueError, match="expected \\(14,\\)"):
        NeuronSet.from_table(table, np.ones(3, dtype=bool))


def test_activation_statistics_match_a_direct_recording():
    model = tiny_model("llama")
    ids = IDS.ravel()
    stats = activation_statistics(model, ids, ["mlp.out"], window=8)
    sites = resolve_sites(model, ["mlp.out"])
    chunks = {s.key: [] for s in sites}
    with torch.no_grad(), site_hooks(model, sites, lambda s, t: chunks[s.key].append(t[0].double())):
        for start in range(0, ids.numel(), 8):
            model(input_ids=ids[start:start + 8][None])
    values = torch.cat([torch.cat(chunks[s.key]) for s in sites], dim=1)
    np.testing.assert_allclose(stats.mean_abs, values.abs().mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats.mean, values.mean(0).numpy(), rtol=1e-6, atol=1e-9)
    assert stats.n_tokens == ids.numel() and len(stats.neurons) == 3 * 32
    activations, neurons = token_activations(model, ids, ["mlp.out"], window=8)
    np.testing.assert_allclose(activations, values.numpy(), rtol=1e-6, atol=1e-7)
    assert neurons.to_dict() == stats.neurons.to_dict()
    with_prefix, _ = token_activations(model, ids[:8], ["mlp.out"], window=8, prefix_ids=(5,))
    reference, _ = record_ids(model, torch.cat([torch.tensor([5]), ids[:8]]), ["mlp.out"])
    np.testing.assert_allclose(with_prefix, torch.cat([reference[s.key][0, 1:] for s in sites], 1).numpy(),
                               rtol=1e-6, atol=1e-7)
    from_matrix = ActivationStatistics.from_activations(activations, neurons)
    np.testing.assert_allclose(from_matrix.mean_abs, stats.mean_abs, rtol=1e-5)
    np.testing.assert_allclose(from_matrix.mean, stats.mean, rtol=1e-5, atol=1e-7)


def test_controls_match_count_layers_and_magnitude():
    model = tiny_model("llama")
    universe = universe_table(model, ["mlp.out"])
    target = NeuronSet({"L02.mlp.out": list(range(10)), "L00.mlp.out": [4, 5]})
    for seed in range(3):
        control = count_matched(target, universe, seed=seed)
        assert control.size == target.size
        assert control.difference(target).size == control.size  # disjoint
        layered = layer_matched(target, universe, seed=seed)
        assert layered.layer_distribution() == target.layer_distribution()
        assert layered.difference(target).size == layered.size
    assert count_matched(target, universe, 0).to_dict() != count_matched(target, universe, 1).to_dict()
    # A target filling most of layer 2: the shortfall comes from the nearest layer (1).
    crowded = NeuronSet({"L02.mlp.out": list(range(20)), "L00.mlp.out": [0]})
    shifted = layer_matched(crowded, universe, seed=0)
    assert shifted.size == crowded.size and shifted.difference(crowded).size == shifted.size
    assert shifted.layer_distribution() == {("mlp.out", 0): 1, ("mlp.out", 1): 8, ("mlp.out", 2): 12}
    # the study's lesion check counts (and its report states) the 8 drawn from layer 1
    from brainalign.pipeline.lesion_check import _drawn_from_other_layers
    assert _drawn_from_other_layers(crowded, shifted) == 8
    assert _drawn_from_other_layers(target, layer_matched(target, universe, seed=0)) == 0
    # the study's lesion-over-controls ratio: finite, inf only for a lesion that raised
    # perplexity beside unchanged controls, NaN when neither raised it (was inf)
    from brainalign.pipeline.lesion_check import rise_ratio
    assert rise_ratio(3.0, 1.5) == 2.0 and rise_ratio(-0.5, 2.0) == -0.25
    assert rise_ratio(0.7, 0.0) == float("inf")
    assert np.isnan(rise_ratio(-0.0074, -0.0037)) and np.isnan(rise_ratio(0.0, 0.0))
    assert np.isnan(rise_ratio(0.7, -0.1))

    # A large synthetic universe with a wide spread of magnitudes, so that a match means something.
    neurons = NeuronTable.from_sites([(layer, "mlp.out", 500) for layer in range(4)])
    rng = np.random.default_rng(0)
    magnitude = rng.lognormal(0, 1.5, size=len(neurons))
    stats = ActivationStatistics(neurons, magnitude, magnitude, n_tokens=100)
    target_rows = np.flatnonzero((neurons.layer == 3) & (magnitude > np.quantile(magnitude, 0.8)))[:40]
    target = NeuronSet.from_table(neurons, target_rows)
    for seed in range(3):
        control = magnitude_matched(target, stats, seed=seed, n_candidates=4)
        assert control.size == target.size and control.difference(target).size == control.size
        rows = np.flatnonzero(_membership(neurons, control))
        # Neuron by neuron (sorted) within 20 %, means within 10 % (the spread is 100s of %).
        np.testing.assert_allclose(np.sort(magnitude[rows]), np.sort(magnitude[target_rows]), rtol=0.2)
        np.testing.assert_allclose(magnitude[rows].mean(), magnitude[target_rows].mean(), rtol=0.1)
        random_rows = np.flatnonzero(_membership(neurons, count_matched(target, neurons, seed=seed)))
        assert abs(magnitude[random_rows].mean() - magnitude[target_rows].mean()) > 0.3 * magnitude[target_rows].mean()
    assert magnitude_matched(target, stats, 0).to_dict() != magnitude_matched(target, stats, 1).to_dict()
    # Each pick is among the nearest *free* neurons, however far the walk from the target's
    # rank: two targets at 1.35 beside 1.0-1.3 must never get 5-8 once 1.3 and 1.2 are taken.
    values = np.array([1.35, 1.35, 1.0, 1.1, 1.2, 1.3, 5.0, 6.0, 7.0, 8.0])
    few = NeuronTable.from_sites([(0, "mlp.out", values.size)])
    few_stats = ActivationStatistics(few, values, values, n_tokens=1)
    for seed in range(20):
        control = magnitude_matched(NeuronSet({"L00.mlp.out": [0, 1]}), few_stats, seed=seed,
                                    n_candidates=2)
        assert values[_membership(few, control)].max() <= 1.3
    stats = activation_statistics(model, IDS.ravel(), ["mlp.out"])
    target = NeuronSet({"L02.mlp.out": list(range(10))})
    controls = matched_controls(target, stats.neurons, stats, seeds=[0, 1])
    assert {k: len(v) for k, v in controls.items()} == {"count": 2, "layer": 2, "magnitude": 2}
    with pytest.raises(ValueError, match="not in the universe"):
        count_matched(NeuronSet({"L00.mlp.inner": [1]}), universe)


def test_scale_and_add_need_their_value():
    """edit_neurons(..., "scale") without a value was a lesion (factor 0)."""
    from brainalign.interventions.neurons import edit_neurons

    model = tiny_model("llama")
    neurons = NeuronSet({"L00.mlp.out": [0, 1]})
    for mode in ("scale", "add"):
        with pytest.raises(ValueError, match=f"mode '{mode}' takes a value"):
            with edit_neurons(model, neurons, mode):
                pass
    with pytest.raises(ValueError, match="value=2.0 is for mode 'scale' or 'add', not 'zero'"):
        with edit_neurons(model, neurons, "zero", value=2.0):
            pass
