"""Pattern -> network mapping: statistics, spatial null calibration, planted networks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sklearn.metrics import jaccard_score
from threadpoolctl import threadpool_limits

from conftest import requires_cuda

from brainalign.encoding.maps import DelayedCoefficients
from brainalign.networks.atlases import Atlas, load_atlas
from brainalign.networks.mapping import (NetworkMapping, layer_network_composition,
                                         map_patterns, subgroup_networks)
from brainalign.networks.nulls import (fsaverage_sphere, phase_randomized_surrogates,
                                       spin_indices)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # The dev machine's 2 cores are shared: small BLAS calls are far faster single-threaded.
    with threadpool_limits(limits=1):
        yield


def _smooth_surface_maps(rng, sphere, n_maps, sigma_mm=20.0, n_centres=200):
    """Random smooth maps on a sphere: random Gaussian bumps (left, right independent)."""
    parts = []
    for coords in sphere:
        centres = coords[rng.choice(len(coords), n_centres, replace=False)]
        kernel = np.exp(-((coords[:, None] - centres[None]) ** 2).sum(-1) / (2 * sigma_mm ** 2))
        parts.append(rng.standard_normal((n_maps, n_centres)) @ kernel.T)
    return np.concatenate(parts, axis=1)


def _ellipsoid_grid(shape=(20, 24, 20)):
    centred = np.indices(shape) - np.array(shape)[:, None, None, None] / 2 + 0.5
    radii = np.array(shape)[:, None, None, None] / 2 - 1
    return ((centred / radii) ** 2).sum(axis=0) <= 1


def _blob_atlas(rng, mask, n_networks=3, sigma=3.0):
    field = gaussian_filter(rng.standard_normal(mask.shape), sigma)
    labels = np.zeros(mask.shape, dtype=int)
    for k, q in enumerate(np.quantile(field[mask], [0.6, 0.75, 0.9][:n_networks])):
        labels[(field > q) & mask] = k + 1
    return Atlas("blobs", "volume", [f"net{k + 1}" for k in range(n_networks)],
                 labels[mask], grid_mask=mask)


def test_spin_indices_keep_hemispheres_and_mirror_the_right_rotation():
    left, _ = fsaverage_sphere("fsaverage3")
    right = left * np.array([-1.0, 1.0, 1.0])       # exact mirror image of the left sphere
    indices = spin_indices(left, right, n_perm=5, random_state=3)
    n_left = len(left)
    assert indices.shape == (5, 2 * n_left)
    assert indices[:, :n_left].max() < n_left and indices[:, n_left:].min() >= n_left
    # consistent rotation: mirrored vertices move to mirrored places
    np.testing.assert_array_equal(indices[:, n_left:] - n_left, indices[:, :n_left])
    # a rotation is nearly a bijection of the mesh, and not the identity
    assert all(len(np.unique(row)) > 0.8 * len(row) for row in indices)
    assert np.mean(indices[:, :n_left] == np.arange(n_left)) < 0.05


def test_correlation_dice_jaccard_enrichment_match_references():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 500)
    atlas = Atlas("toy", "roi", ["a", "b", "c"], labels)
    maps = rng.standard_normal((2, 500))
    maps[0, 10] = np.nan                                   # a target without data
    significant = rng.random((2, 500)) < 0.3
    result = map_patterns(maps, atlas, significant, null="permutation", n_perm=20)
    valid = np.arange(500) != 10
    for p in range(2):
        for n in range(3):
            inside = labels == n + 1
            r = np.corrcoef(maps[p, valid], inside[valid])[0, 1]
            assert result.statistics["correlation"][p, n] == pytest.approx(r, abs=1e-10)
            s, g = significant[p, valid], inside[valid]
            dice = 2 * np.sum(s & g) / (s.sum() + g.sum())
            assert result.statistics["dice"][p, n] == pytest.approx(dice)
            assert result.statistics["jaccard"][p, n] == pytest.approx(jaccard_score(g, s))
            enrichment = (np.sum(s & g) / s.sum()) / (g.sum() / valid.sum())
            assert result.statistics["enrichment"][p, n] == pytest.approx(enrichment)


def test_spin_null_is_calibrated_on_random_smooth_maps_and_permutation_is_not():
    rng = np.random.default_rng(1)
    atlas = load_atlas("yeo7", "fsaverage4")
    maps = _smooth_surface_maps(rng, fsaverage_sphere("fsaverage4"), n_maps=80)
    spin = map_patterns(maps, atlas, null="spin", n_perm=100, random_state=0)
    share = np.mean(spin.p_values["correlation"] < 0.05)           # 560 p-values
    assert 0.02 <= share <= 0.10
    naive = map_patterns(maps, atlas, null="permutation", n_perm=100, random_state=0)
    assert np.mean(naive.p_values["correlation"] < 0.05) > 0.2      # ignores smoothness


def test_volume_null_is_calibrated_on_random_smooth_maps_and_permutation_is_not():
    rng = np.random.default_rng(2)
    mask = _ellipsoid_grid()
    atlas = _blob_atlas(rng, mask)
    maps = np.stack([gaussian_filter(rng.standard_normal(mask.shape), 2.5)[mask]
                     for _ in range(60)])
    volume = map_patterns(maps, atlas, null="auto", n_perm=100, random_state=0)
    assert volume.null == "volume"
    share = np.mean(volume.p_values["correlation"] < 0.05)         # 180 p-values
    assert 0.02 <= share <= 0.10
    naive = map_patterns(maps, atlas, null="permutation", n_perm=100, random_state=0)
    assert np.mean(naive.p_values["correlation"] < 0.05) > 0.2


def test_phase_randomised_surrogates_keep_values_and_smoothness():
    rng = np.random.default_rng(4)
    mask = _ellipsoid_grid()
    smooth = gaussian_filter(rng.standard_normal(mask.shape), 2.0)[mask]
    rough = rng.standard_normal(mask.sum())
    draws = list(phase_randomized_surrogates(np.stack([smooth, rough]), mask, 3, 0))

    def neighbour_r(values):
        volume = np.full(mask.shape, np.nan)
        volume[mask] = values
        a, b = volume[:-1].ravel(), volume[1:].ravel()
        keep = np.isfinite(a) & np.isfinite(b)
        return np.corrcoef(a[keep], b[keep])[0, 1]

    for draw in draws:
        np.testing.assert_allclose(np.sort(draw[0]), np.sort(smooth))   # same values
        assert not np.allclose(draw[0], smooth)
        assert abs(neighbour_r(draw[0]) - neighbour_r(smooth)) < 0.1   # same smoothness
        assert abs(neighbour_r(draw[1])) < 0.1                          # white stays white


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
def test_torch_surrogates_equal_the_numpy_ones(device):
    rng = np.random.default_rng(10)
    mask = _ellipsoid_grid((10, 12, 10))
    maps = np.stack([gaussian_filter(rng.standard_normal(mask.shape), 1.5)[mask]
                     for _ in range(3)])
    reference = list(phase_randomized_surrogates(maps, mask, 4, random_state=3))
    on_device = list(phase_randomized_surrogates(maps, mask, 4, random_state=3,
                                                 device=device))
    for expected, actual in zip(reference, on_device):
        np.testing.assert_allclose(actual, expected, atol=1e-12)


def test_planted_surface_network_is_assigned_with_small_p():
    rng = np.random.default_rng(5)
    atlas = load_atlas("yeo7", "fsaverage5")
    target = atlas.network_index("DorsalAttention")
    planted = atlas.indicators()[target] + 0.3 * rng.standard_normal(atlas.n_targets)
    significant = atlas.data == target + 1
    result = map_patterns(planted[None], atlas, significant, n_perm=200,
                          pattern_names=["planted"], random_state=0)
    assert result.null == "spin"
    assert result.assigned == ["DorsalAttention"]
    # beyond every rotation: the tail fit resolves below the 1/201 of counting
    assert result.p_values["correlation"][0, target] < 1 / 201
    assert result.p_method["correlation"][0, target] == "gpd"
    assert result.confidence[0] > 0.95
    assert result.statistics["dice"][0, target] == pytest.approx(1.0)
    # enrichment of a perfect overlap = 1 / (the network's share of cortex)
    cortex = ~atlas.medial_wall
    share = np.sum(atlas.data == target + 1) / cortex.sum()
    assert result.statistics["enrichment"][0, target] == pytest.approx(1 / share)


def test_planted_volume_network_is_assigned_with_small_p():
    rng = np.random.default_rng(6)
    mask = _ellipsoid_grid()
    atlas = _blob_atlas(rng, mask)
    planted = atlas.indicators()[1] + 0.5 * rng.standard_normal(atlas.n_targets)
    result = map_patterns(planted[None], atlas, n_perm=200, random_state=0)
    assert result.assigned == ["net2"]
    assert result.p_values["correlation"][0, 1] < 0.01


def test_subgroups_inherit_networks_and_tables_round_trip(tmp_path):
    atlas = Atlas("toy", "roi", ["a", "b"], np.repeat([1, 2, 0], 40))
    maps = np.stack([atlas.indicators()[0], atlas.indicators()[1],
                     np.random.default_rng(7).standard_normal(120)])
    result = map_patterns(maps, atlas, null="permutation", n_perm=200)
    assert result.assigned == ["a", "b", "none"]
    neurons = subgroup_networks(result, np.array([0, 0, 1, 2, -1, 1]),
                                layer=np.array([0, 1, 1, 1, 2, 2]))
    assert neurons["network"].tolist() == ["a", "a", "b", "none", "none", "b"]
    composition = layer_network_composition(neurons, result.networks)
    assert composition.loc[1].tolist() == [1, 1, 1] and composition.loc[2].tolist() == [0, 1, 1]
    table_path = result.to_tsv(tmp_path / "mapping.tsv")
    assert (tmp_path / "mapping_assignments.tsv").exists() and (tmp_path / "mapping.json").exists()
    import pandas as pd

    table = pd.read_csv(table_path, sep="\t")
    assert len(table) == 3 * 2 and {"dice", "p_fdr_correlation"} - set(table) == {"dice"}
    loaded = NetworkMapping.load(result.to_json(tmp_path / "mapping_full.json"))
    assert loaded.assigned == result.assigned
    np.testing.assert_allclose(loaded.p_fdr["correlation"], result.p_fdr["correlation"])
    with pytest.raises(ValueError, match="targets"):
        map_patterns(maps[:, :10], atlas)


def test_surface_masker_target_gives_the_same_spin_test_as_the_medial_wall_mask():
    from brainalign.brain import SurfaceMasker

    full = load_atlas("yeo7", "fsaverage4")
    cortex = ~full.medial_wall
    masker = SurfaceMasker(mask={"L": cortex[:2562], "R": cortex[2562:]}).fit()
    restricted = load_atlas("yeo7", "fsaverage4", target=masker)
    assert restricted.n_targets == masker.n_targets_ == cortex.sum()
    np.testing.assert_array_equal(restricted.data, full.data[cortex])
    maps = _smooth_surface_maps(np.random.default_rng(8), fsaverage_sphere("fsaverage4"), 3)
    on_full = map_patterns(maps, full, n_perm=40, random_state=1)
    on_cortex = map_patterns(maps[:, cortex], restricted, n_perm=40, random_state=1)
    np.testing.assert_allclose(on_cortex.statistics["correlation"],
                               on_full.statistics["correlation"], atol=1e-10)
    np.testing.assert_array_equal(on_cortex.p_values["correlation"],
                                  on_full.p_values["correlation"])


def test_two_sided_assigns_a_sign_flipped_network():
    atlas = Atlas("toy", "roi", ["a", "b"], np.repeat([1, 2, 0], 40))
    flipped = -atlas.indicators()[1] + 0.1 * np.random.default_rng(9).standard_normal(120)
    one_sided = map_patterns(flipped[None], atlas, null="permutation", n_perm=200)
    two_sided = map_patterns(flipped[None], atlas, null="permutation", n_perm=200,
                             alternative="two-sided")
    assert one_sided.assigned != ["b"] and two_sided.assigned == ["b"]


def _seventeen_network_rois(rng, n_patterns, planted, strength=1.2):
    """17 ROI networks of 12 targets plus 36 unlabelled ones; noise maps with
    ``strength`` x the indicator of network ``k`` added to pattern ``p`` for (p, k)."""
    atlas = Atlas("rois", "roi", [f"net{k:02d}" for k in range(17)],
                  np.concatenate([np.repeat(np.arange(1, 18), 12), np.zeros(36, int)]))
    maps = rng.standard_normal((n_patterns, atlas.n_targets))
    for pattern, network in planted:
        maps[pattern] += strength * atlas.indicators()[network]
    return atlas, maps


def test_few_links_among_many_patterns_pass_below_the_counting_floor():
    """64 patterns x 17 networks, 3 planted links, 200 permutations: counting stops at
    1/201, above the per-pattern threshold .05/17; the tail p-values find every link."""
    planted = [(5, 3), (20, 11), (47, 16)]
    atlas, maps = _seventeen_network_rois(np.random.default_rng(12), 64, planted)
    mapping = map_patterns(maps, atlas, null="permutation", n_perm=200, random_state=0)
    counted = map_patterns(maps, atlas, null="permutation", n_perm=200, tail="empirical",
                           random_state=0)
    assert counted.p_values["correlation"].min() == 1 / 201
    for pattern, network in planted:
        assert mapping.assigned[pattern] == f"net{network:02d}"
        assert mapping.p_values["correlation"][pattern, network] < 0.05 / 17
    # counting passes a link only where a second network of the pattern is at the floor too
    assert sum(counted.assigned[p] == f"net{k:02d}" for p, k in planted) < 3
    others = [a for k, a in enumerate(mapping.assigned) if k not in dict(planted)]
    assert sum(a != "none" for a in others) <= 6          # per-pattern level .05: ~3 of 61
    assert mapping.inference["p_values"]["n_tests_by_method"]["correlation"]["gpd"] >= 3


def test_a_patterns_network_does_not_depend_on_the_other_patterns():
    rng = np.random.default_rng(13)
    atlas, maps = _seventeen_network_rois(rng, 21, [(0, 2)] + [(k, k % 17) for k in
                                                               range(1, 21)], strength=3.0)
    alone = map_patterns(maps[:1], atlas, null="permutation", n_perm=300, random_state=1)
    crowd = map_patterns(maps, atlas, null="permutation", n_perm=300, random_state=1)
    assert sum(a != "none" for a in crowd.assigned) == 21
    assert alone.assigned == crowd.assigned[:1] == ["net02"]
    # equal up to the last bits that numpy's vectorised exp leaves to the array's length
    np.testing.assert_allclose(alone.p_fdr["correlation"][0], crowd.p_fdr["correlation"][0],
                               rtol=1e-12, atol=0)


def test_encoding_coefficients_with_delays_are_refused():
    atlas = Atlas("toy", "roi", ["a", "b"], np.repeat([1, 2, 0], 40))
    coef = DelayedCoefficients(np.zeros((6, 120)), [{"name": "atoms", "n_features": 3,
                                                     "delays": [1, 2], "columns": [0, 6]}])
    with pytest.raises(ValueError, match=r"pattern_maps\(result, band=\.\.\.\)"):
        map_patterns(coef, atlas)


def test_pass_masks_and_p_value_methods_round_trip(tmp_path):
    import json

    atlas = Atlas("toy", "roi", ["a", "b", "c"], np.repeat([1, 2, 3, 0], 30))
    rng = np.random.default_rng(14)
    maps = rng.standard_normal((4, 120))
    maps[0] += 2 * atlas.indicators()[1]
    maps[1] -= 2 * atlas.indicators()[2]
    mapping = map_patterns(maps, atlas, null="permutation", n_perm=200, random_state=0)
    assert mapping.assigned[0] == "b" and mapping.assigned[1] != "c"
    np.testing.assert_array_equal(mapping.passes["spatial"],
                                  (mapping.p_fdr["correlation"] < 0.05)
                                  & (mapping.statistics["correlation"] > 0))
    assert mapping.passes["assigned"].sum(axis=1).tolist() == [
        int(a != "none") for a in mapping.assigned]
    assert mapping.passes["assigned"][0, 1]
    loaded = NetworkMapping.load(mapping.to_json(tmp_path / "mapping.json"))
    assert set(loaded.passes) == {"spatial", "assigned"}
    for test, mask in mapping.passes.items():
        np.testing.assert_array_equal(loaded.passes[test], mask)
        assert loaded.passes[test].dtype == bool
    np.testing.assert_array_equal(loaded.p_method["correlation"], mapping.p_method["correlation"])
    assert loaded.inference == json.loads(json.dumps(mapping.inference))
    mapping.to_tsv(tmp_path / "mapping.tsv")
    sidecar = json.loads((tmp_path / "mapping.json").read_text())
    assert sidecar["inference"]["p_values"]["tail"] == "gpd"
    assert "each pattern" in sidecar["inference"]["correction"]
    table = mapping.table()
    assert {"p_method_correlation", "passes_spatial", "passes_assigned"} <= set(table)


def test_volume_null_warns_when_the_mask_leaves_most_of_its_box_empty(caplog):
    """Zeros outside a mask that does not fill its bounding box make the surrogates rougher
    than the maps (anti-conservative); the null says so rather than staying silent."""
    mask = _ellipsoid_grid()
    maps = np.random.default_rng(0).standard_normal((1, int(mask.sum())))
    with caplog.at_level("WARNING", logger="brainalign.networks.nulls"):
        next(phase_randomized_surrogates(maps, mask, 1, 0))
    corner = np.argwhere(mask)
    box = mask[tuple(slice(lo, hi + 1) for lo, hi in zip(corner.min(0), corner.max(0)))]
    assert box.mean() < 0.9
    assert f"fills {100 * box.mean():.0f}% of its bounding box" in caplog.text
    assert "null='shift'" in caplog.text
    caplog.clear()
    full = np.ones((6, 7, 5), dtype=bool)
    with caplog.at_level("WARNING", logger="brainalign.networks.nulls"):
        next(phase_randomized_surrogates(np.ones((1, full.sum())) * np.arange(full.sum()),
                                         full, 1, 0))
    assert caplog.text == ""
