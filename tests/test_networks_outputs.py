"""Network stage outputs: tables, assignment maps through export.save_map, PNG figures."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from brainalign.networks.atlases import Atlas, load_atlas
from brainalign.networks.figures import (plot_atlas, plot_pattern_map,
                                         plot_pattern_network_matrix)
from brainalign.networks.mapping import map_patterns
from brainalign.networks.outputs import (assignment_maps, save_assignment_maps,
                                         write_mapping_tables)


@pytest.fixture(scope="module")
def volume_case():
    """Two blob networks on a small grid, one planted pattern each, and a noise pattern."""
    with threadpool_limits(limits=1):
        mask = np.zeros((12, 14, 12), dtype=bool)
        mask[1:-1, 1:-1, 1:-1] = True
        labels = np.zeros(mask.shape, dtype=int)
        labels[2:6, 2:7, 2:10] = 1
        labels[6:10, 7:12, 2:10] = 2
        image = nib.Nifti1Image(labels.astype(np.int16), np.diag([3.0, 3.0, 3.0, 1.0]))
        atlas = Atlas("toy", "volume", ["Visual", "Default"], labels[mask], image=image,
                      grid_mask=mask)
        rng = np.random.default_rng(0)
        maps = np.stack([atlas.indicators()[0], atlas.indicators()[1],
                         np.zeros(atlas.n_targets)]) + 0.3 * rng.standard_normal((3,
                                                                                   mask.sum()))
        mapping = map_patterns(maps, atlas, n_perm=100, pattern_names=["a0", "a1", "a2"])
    return atlas, maps, mapping, image


def test_tables_subgroups_and_layer_composition(volume_case, tmp_path):
    _, _, mapping, _ = volume_case
    assert mapping.assigned[:2] == ["Visual", "Default"]
    subgroup = np.array([0, 0, 1, 2, 2, -1])
    layer = np.array([0, 1, 1, 1, 2, 2])
    paths = write_mapping_tables(mapping, tmp_path, subgroup=subgroup, layer=layer)
    patterns = pd.read_csv(paths["patterns"], sep="\t")
    assert len(patterns) == 3 * 2
    row = patterns[(patterns.pattern == "a0") & (patterns.network == "Visual")].iloc[0]
    assert row.correlation == pytest.approx(mapping.statistics["correlation"][0, 0], rel=1e-5)
    neurons = pd.read_csv(paths["subgroups"], sep="\t")
    assert neurons["network"].tolist() == ["Visual", "Visual", "Default", mapping.assigned[2],
                                           mapping.assigned[2], "none"]
    layers = pd.read_csv(paths["layers"], sep="\t", index_col=0)
    assert layers.loc[1, "Visual"] == 1 and layers.loc[1, "Default"] == 1
    assert int(layers.to_numpy().sum()) == len(subgroup)
    sidecar = json.loads(paths["layers"].with_suffix(".json").read_text())
    assert sidecar["atlas"] == "toy" and "versions" in sidecar


def test_assignment_maps_written_as_nifti_with_sidecar(volume_case, tmp_path):
    from brainalign.brain import VolumeMasker

    atlas, maps, mapping, image = volume_case
    winner, network = assignment_maps(mapping, maps)
    inside_visual = atlas.data == 1
    # inside a planted network its own pattern wins almost everywhere
    assert np.mean(winner[inside_visual] == 1) > 0.9
    assert np.mean(network[inside_visual] == 1) > 0.9
    mask_img = nib.Nifti1Image(atlas.grid_mask.astype(np.uint8), image.affine)
    masker = VolumeMasker(mask_img=mask_img).fit()
    paths = save_assignment_maps(mapping, maps, masker, tmp_path, {"sub": "01"})
    written = np.asarray(nib.load(paths["network"]).dataobj)
    np.testing.assert_array_equal(written[atlas.grid_mask], network)
    sidecar = json.loads(paths["network"].with_name(
        paths["network"].name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["networks"] == {"1": "Visual", "2": "Default"}
    assert sidecar["assigned"]["a0"] == "Visual"


def test_figures_are_written_as_png(volume_case, tmp_path):
    atlas, maps, mapping, _ = volume_case
    matrix = plot_pattern_network_matrix(mapping, tmp_path / "matrix.png")
    overlay = plot_atlas(atlas, tmp_path / "atlas.png")
    pattern = plot_pattern_map(maps[0], atlas, tmp_path / "pattern.png", "a0")
    surface = plot_atlas(load_atlas("yeo7", "fsaverage5"), tmp_path / "yeo7.png")
    import matplotlib.image

    for path in (matrix, overlay, pattern, surface):
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 100
        assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 20   # not blank
    with pytest.raises(ValueError, match="fsaverage5"):
        plot_atlas(load_atlas("yeo7", "fsaverage4"), tmp_path / "bad.png")
