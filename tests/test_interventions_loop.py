"""The brain loop on a simulation with planted subgroup -> network truth (tiny model)."""

from __future__ import annotations

import numpy as np
import pytest
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
