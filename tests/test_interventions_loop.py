"""The brain loop on a simulation with planted subgroup -> network truth (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_record import make_story, tiny_loaded

from brainalign.interventions.loop import LoopResult, brain_loop, network_means, subgroup_features


pytestmark = pytest.mark.usefixtures("single_thread")


def test_subgroup_features_and_network_means():
    data = np.arange(12, dtype=float).reshape(3, 4)
    np.testing.assert_allclose(subgroup_features(data, np.array([0, 1, 0, -1])),
                               [[1, 1], [5, 5], [9, 9]])
    np.testing.assert_allclose(network_means(np.array([1.0, 3.0, 5.0, np.nan]), np.array([1, 1, 0, 2]), 3),
                               [2.0, np.nan, np.nan])
    result = LoopResult(["a", "b"], ["b", "a"], [0, 1], np.array([0.5, 0.5]),
                        np.array([[0.4, 0.1], [0.45, 0.5]]), [3, 4])
    assert result.largest_drop_network() == ["b", "a"] and result.own_network_hit() == [True, True]


def test_drop_is_largest_in_the_planted_network(tmp_path):
    from brainalign.record import Recording, record_story
    from brainalign.simulate import roi_space, simulate_fmri
    from brainalign.timecourse import recording_to_tr

    loaded = tiny_loaded("llama", seed=1)
    story = make_story(400, seed=1)
    story = story.with_scan(tr_s=2.0, n_volumes=(30, 30), first_volume_s=0.0)
    path = record_story(loaded, story, ["mlp.out"], tmp_path / "truth", progress=False)
    timecourses = recording_to_tr(Recording.open(path))
    names = ["Visual", "Language", "Default"]
    labels = np.repeat([1, 2, 3], 8)
    hits = []
    for seed in range(2):
        simulation = simulate_fmri(timecourses, roi_space(labels, names), n_patterns=3, n_clusters=6,
                                   snr=4.0, n_subjects=1, random_state=seed)
        truth = simulation.truth
        planted = {p: net for p, net in enumerate(truth.pattern_network())}
        result = brain_loop(loaded, story, simulation.bold[0], labels, names, truth.subgroup, planted,
                            tmp_path / f"seed{seed}", encoding_options={"delays": [1, 2, 3]})
        assert sorted(result.lesioned_networks) == sorted(n for n in planted.values() if n != "none")
        assert result.lesioned_r.shape == (len(result.lesioned_networks), 3)
        assert np.all(result.baseline_r > 0.3)  # the planted signal is found before lesions
        hits.extend(result.own_network_hit())
        # Lesioned neurons read 0, so their own subgroup's feature is gone: a real drop.
        own = [names.index(n) for n in result.lesioned_networks]
        assert np.all(result.delta_r[np.arange(len(own)), own] < -0.1)
    assert np.mean(hits) >= 0.9


def test_a_recording_is_never_reused_across_lesions(tmp_path):
    """The edit in force is part of a recording's settings: the same folder recorded intact,
    then under a lesion, then under another lesion, holds each one's own values (the
    lesion's recording used to be the intact one, left in place)."""
    from brainalign.interventions import NeuronSet, lesion, scale
    from brainalign.record import Recording, record_story

    loaded = tiny_loaded("llama", seed=1)
    story = make_story(60, seed=1)

    def record(**options):
        path = record_story(loaded, story, ["mlp.out"], tmp_path / "d", layers=[0],
                            progress=False, **options)
        return np.asarray(Recording.open(path).matrix()), Recording.open(path).manifest

    intact, manifest = record()
    assert "interventions" not in manifest["settings"]
    first = NeuronSet({"L00.mlp.out": np.arange(16)}, name="first")
    with lesion(loaded.model, first):
        with pytest.raises(FileExistsError, match="interventions in force"):
            record()
        lesioned, manifest = record(overwrite=True)
    assert np.abs(lesioned[:, :16]).max() == 0.0 and np.abs(intact[:, :16]).max() > 0
    np.testing.assert_allclose(lesioned[:, 16:], intact[:, 16:], rtol=1e-5, atol=1e-6)
    (edit,) = manifest["settings"]["interventions"]
    assert edit["mode"] == "zero" and edit["set"] == "first" and edit["n_units"] == 16
    with lesion(loaded.model, NeuronSet({"L00.mlp.out": np.arange(16, 32)}, name="other")):
        other, _ = record(overwrite=True)
    assert np.abs(other[:, 16:32]).max() == 0.0 and np.abs(other[:, :16]).max() > 0
    with scale(loaded.model, first, 2.0):
        doubled, manifest = record(overwrite=True)
    np.testing.assert_allclose(doubled[:, :16], 2 * intact[:, :16], rtol=1e-5, atol=1e-6)
    assert manifest["settings"]["interventions"][0]["value"] == 2.0
    back, manifest = record(overwrite=True)  # every edit has ended: the intact values again
    np.testing.assert_array_equal(back, intact)
    assert "interventions" not in manifest["settings"]


def test_an_edited_parameter_region_is_in_force_for_recordings(tmp_path):
    from brainalign.interventions.regions import Region, scale_region, zero_region
    from brainalign.models.sites import active_edits
    from brainalign.record import Recording, record_story

    loaded = tiny_loaded("llama", seed=1)
    story = make_story(40, seed=1)
    name = next(n for n, _ in loaded.model.named_parameters() if "layers.0.mlp.down_proj" in n)
    region = Region({name: torch.arange(0, 64)}, name="r")
    with zero_region(loaded.model, region):
        (zeroed,) = active_edits(loaded.model)
        path = record_story(loaded, story, ["mlp.out"], tmp_path, layers=[0], progress=False)
    with scale_region(loaded.model, region, 3.0):
        (scaled,) = active_edits(loaded.model)
    assert zeroed["kind"] == "parameters" and zeroed["n_parameters"] == 64
    assert zeroed["values_sha256"] != scaled["values_sha256"]
    assert active_edits(loaded.model) == []
    assert Recording.open(path).manifest["settings"]["interventions"] == [zeroed]


def test_lesions_edit_the_declared_layout_sites(tmp_path):
    """With a declared layout (LoadedModel.layout, `record --layout`) a lesion edits the
    module the recording reads: Gemma-3's mlp.out declared before its sandwich norm (the
    lesion used to edit the automatic site, after the norm, and the recorded units were
    not 0)."""
    from brainalign.interventions import NeuronSet, lesion
    from brainalign.models.sites import declared_layout, load_layout, resolve_sites
    from brainalign.record import Recording, record_story

    loaded = tiny_loaded("gemma3", seed=1)
    automatic = resolve_sites(loaded.model, ["mlp.out"], [0])[0].module_path
    loaded.layout = load_layout({"mlp.out": ["mlp", "output"], "resid": ["", "output"]})
    declared = resolve_sites(loaded.model, ["mlp.out"], [0])[0].module_path
    assert (automatic, declared) == ("model.layers.0.post_feedforward_layernorm",
                                     "model.layers.0.mlp")
    with lesion(loaded.model, NeuronSet({"L00.mlp.out": np.arange(8)})):
        path = record_story(loaded, make_story(60, seed=1), ["mlp.out"], tmp_path,
                            layers=[0], progress=False)
    values = np.asarray(Recording.open(path).matrix())
    assert np.abs(values[:, :8]).max() == 0.0 and np.abs(values[:, 8:]).max() > 0
    loaded.layout = None
    assert declared_layout(loaded.model) is None
    assert resolve_sites(loaded.model, ["mlp.out"], [0])[0].module_path == automatic


def test_matched_random_lesions_leave_the_planted_network_alone(tmp_path):
    """lesion_sets: layer-matched random sets drawn outside each subgroup (the features stay
    the real subgroups') lose far less in the planted network than the real lesions."""
    from brainalign.interventions import NeuronSet, layer_matched
    from brainalign.record import Recording, record_story
    from brainalign.simulate import roi_space, simulate_fmri
    from brainalign.timecourse import recording_to_tr

    loaded = tiny_loaded("llama", seed=1)
    story = make_story(400, seed=1).with_scan(tr_s=2.0, n_volumes=(30, 30), first_volume_s=0.0)
    path = record_story(loaded, story, ["mlp.out"], tmp_path / "truth", progress=False)
    timecourses = recording_to_tr(Recording.open(path))
    names, labels = ["Visual", "Language", "Default"], np.repeat([1, 2, 3], 8)
    simulation = simulate_fmri(timecourses, roi_space(labels, names), n_patterns=3,
                               n_clusters=6, snr=4.0, n_subjects=1, random_state=0)
    truth = simulation.truth
    planted = {p: net for p, net in enumerate(truth.pattern_network()) if net != "none"}
    neurons = timecourses.neurons
    controls = {}
    for group in planted:
        own = NeuronSet.from_table(neurons, truth.subgroup == group)
        controls[group] = layer_matched(own, neurons, seed=group)
        assert controls[group].layer_distribution() == own.layer_distribution()
        members = {(k, int(u)) for k, units in own.units.items() for u in units}
        assert members.isdisjoint({(k, int(u)) for k, units in controls[group].units.items()
                                   for u in units})
    options = dict(encoding_options={"delays": [1, 2, 3]})
    real = brain_loop(loaded, story, simulation.bold[0], labels, names, truth.subgroup, planted,
                      tmp_path / "loop", **options)
    control = brain_loop(loaded, story, simulation.bold[0], labels, names, truth.subgroup,
                         planted, tmp_path / "control", lesion_sets=controls, **options)
    np.testing.assert_allclose(control.baseline_r, real.baseline_r)
    assert control.subgroup_sizes == real.subgroup_sizes
    own = [names.index(n) for n in real.lesioned_networks]
    rows = np.arange(len(own))
    assert np.all(real.delta_r[rows, own] < -0.1)
    assert np.all(control.delta_r[rows, own] > real.delta_r[rows, own] + 0.05)
    assert real.provenance["encoding_options"]["tr_s"] == "2.0"  # the story's: high-pass on
    assert control.provenance["lesioned_sets"] == [f"{g}: layer-matched-seed{g}"
                                                   for g in control.lesioned_subgroups]
    assert real.provenance["lesioned_sets"] == [f"{g}: subgroup{g}"
                                                for g in real.lesioned_subgroups]


def test_edits_in_force_follow_the_contexts_nesting():
    """Each context removes its own entry: an equal edit nested inside another leaves the
    outer one's entry in its place (removing the first equal entry reordered them)."""
    from brainalign.interventions import NeuronSet, lesion, scale
    from brainalign.models.sites import active_edits

    loaded = tiny_loaded("llama", seed=1)
    first = NeuronSet({"L00.mlp.out": [1, 2]}, name="a")
    with lesion(loaded.model, first):
        with scale(loaded.model, NeuronSet({"L01.mlp.out": [3]}, name="b"), 2.0):
            with lesion(loaded.model, first):
                assert [e["mode"] for e in active_edits(loaded.model)] == ["zero", "scale", "zero"]
            assert [e["mode"] for e in active_edits(loaded.model)] == ["zero", "scale"]
        with pytest.raises(RuntimeError):
            with lesion(loaded.model, first):
                raise RuntimeError("inside")
        assert [e["set"] for e in active_edits(loaded.model)] == ["a"]
    assert active_edits(loaded.model) == []
