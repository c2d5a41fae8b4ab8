"""Review fixes of networks/ and export/: NaN p-values in the per-pattern FDR, the spaces
volume atlases are labelled with, load_map without the masker's smoothing, user GIfTI
medial wall, one-volume weight maps, and the assignments row of a "none" pattern."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest

from conftest import shared_data

from brainalign.brain import VolumeMasker
from brainalign.brain.volume import NILEARN_MNI_SPACE
from brainalign.export import load_map, save_map
from brainalign.networks.atlases import MNI_SPACE, Atlas, load_atlas
from brainalign.networks.mapping import map_patterns
from brainalign.networks.temporal import TemporalTest

ATLAS_LOGGER = "brainalign.networks.atlases"


def _benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Reference BH adjusted p-values of one family (step-up, monotone, capped at 1)."""
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def _volume_masker(space: str, shape=(12, 14, 12), voxel_mm: float = 4.0,
                   smoothing_fwhm: float | None = None) -> VolumeMasker:
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = [-22.0, -26.0, -22.0]
    mask = np.zeros(shape, dtype=np.uint8)
    mask[2:-2, 2:-2, 2:-2] = 1
    return VolumeMasker(mask_img=nib.Nifti1Image(mask, affine), space=space,
                        smoothing_fwhm=smoothing_fwhm).fit()


# --------------------------------------------------------------------------- FDR with NaN p

def test_a_nan_temporal_p_counts_as_one_and_leaves_the_other_networks_corrected():
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 2, 3], 100)
    atlas = Atlas("toy", "roi", ["A", "B", "C"], labels)
    maps = np.where(labels == 1, 3.0, 0.0)[None] + 0.1 * rng.standard_normal((1, 300))
    temporal_p = np.array([[1e-4, 0.5, np.nan]])
    temporal = TemporalTest(np.array([[0.5, 0.01, np.nan]]), temporal_p, 100, 10, 1, [1],
                            np.array([["gpd", "empirical", "empirical"]]), {})
    mapping = map_patterns(maps, atlas, null="permutation", n_perm=200, temporal=temporal,
                           tail="empirical")
    np.testing.assert_array_equal(mapping.p_values["unique_r"], [[1e-4, 0.5, 1.0]])
    np.testing.assert_allclose(mapping.p_fdr["unique_r"][0],
                               _benjamini_hochberg(np.array([1e-4, 0.5, 1.0])))
    np.testing.assert_allclose(mapping.p_fdr["unique_r"][0], [3e-4, 0.75, 1.0])
    assert mapping.assigned == ["A"]
    expected = 1 - max(mapping.p_fdr["correlation"][0, 0], 3e-4)
    np.testing.assert_allclose(mapping.confidence, [expected])


# --------------------------------------------------------------------------- atlas spaces

def test_spheres_without_target_are_labelled_with_the_space_of_nilearns_grid():
    from nilearn.datasets import load_mni152_template

    template = load_mni152_template(resolution=2)
    atlas = load_atlas("dosenbach", "MNI")
    assert atlas.space == f"{NILEARN_MNI_SPACE}_2mm" == "MNI152NLin2009aSym_2mm"
    assert atlas.space != MNI_SPACE
    assert atlas.image.shape == template.shape == (99, 117, 95)
    np.testing.assert_array_equal(atlas.image.affine, template.affine)
    np.testing.assert_array_equal(atlas.provenance["grid_affine"], template.affine)
    assert atlas.provenance["space"] == atlas.space
    assert atlas.provenance["source_space"] == "MNI152"
    assert atlas.provenance["target_space"] is None


def test_spheres_on_a_masker_take_its_space_without_a_template_warning(caplog):
    masker = _volume_masker("MNI152NLin2009cAsym")
    with caplog.at_level(logging.WARNING, logger=ATLAS_LOGGER):
        atlas = load_atlas("dosenbach", "MNI", target=masker)
    assert [r for r in caplog.records if r.name == ATLAS_LOGGER] == []
    assert atlas.space == "MNI152NLin2009cAsym" and atlas.n_targets == masker.n_targets_
    np.testing.assert_array_equal(atlas.provenance["grid_affine"], masker.mask_img_.affine)


def _user_volume_atlas(tmp_path):
    labels = np.zeros((20, 24, 20), dtype=np.int16)
    labels[2:10], labels[10:18] = 1, 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20.0, -24.0, -20.0]
    file = tmp_path / "halves.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), file)
    return file


def test_atlas_onto_a_masker_of_another_mni_template_warns_once_and_records_both(
        tmp_path, caplog):
    file = _user_volume_atlas(tmp_path)
    masker = _volume_masker("MNI152NLin2009cAsym")
    with caplog.at_level(logging.WARNING, logger=ATLAS_LOGGER):
        atlas = load_atlas(str(file), space="MNI152NLin6Asym_2mm", target=masker,
                           labels=["front", "back"])
    records = [r for r in caplog.records if r.name == ATLAS_LOGGER]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "MNI152NLin6Asym" in message and "MNI152NLin2009cAsym" in message
    assert "\n" not in message
    assert atlas.space == "MNI152NLin2009cAsym"
    assert atlas.provenance["source_space"] == "MNI152NLin6Asym_2mm"
    assert atlas.provenance["target_space"] == "MNI152NLin2009cAsym"
    np.testing.assert_array_equal(atlas.provenance["grid_affine"], masker.mask_img_.affine)
    assert atlas.provenance["grid_shape"] == [12, 14, 12]
    # the same template (another grid) resamples without a warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=ATLAS_LOGGER):
        same = load_atlas(str(file), space="MNI152NLin6Asym_2mm",
                          target=_volume_masker("MNI152NLin6Asym"))
    assert [r for r in caplog.records if r.name == ATLAS_LOGGER] == []
    assert same.space == "MNI152NLin6Asym"
    # a mask image declares no space: the atlas keeps its template, without the 2 mm grid
    plain = load_atlas(str(file), space="MNI152NLin6Asym_2mm", target=masker.mask_img_)
    assert plain.space == "MNI152NLin6Asym" and plain.provenance["target_space"] is None
    # data in no MNI template are refused
    with pytest.raises(ValueError, match="'T1w', which is not an MNI template"):
        load_atlas(str(file), space="MNI152NLin6Asym_2mm", target=_volume_masker("T1w"))


def test_yeo_mni_on_fmriprep_space_warns_and_is_labelled_with_the_data_space(caplog):
    folder = shared_data("yeo2011_mni")
    masker = _volume_masker("MNI152NLin2009cAsym", shape=(40, 48, 40), voxel_mm=4.0)
    with caplog.at_level(logging.WARNING, logger=ATLAS_LOGGER):
        atlas = load_atlas("yeo7", "MNI", target=masker, path=folder)
    records = [r for r in caplog.records if r.name == ATLAS_LOGGER]
    assert len(records) == 1
    assert "MNI152NLin6Asym" in records[0].getMessage()
    assert "MNI152NLin2009cAsym" in records[0].getMessage()
    assert atlas.space == "MNI152NLin2009cAsym"
    assert atlas.provenance["source_space"] == MNI_SPACE
    assert atlas.provenance["target_space"] == "MNI152NLin2009cAsym"
    np.testing.assert_array_equal(atlas.provenance["grid_affine"], masker.mask_img_.affine)


# --------------------------------------------------------------------------- load_map

def test_load_map_returns_the_file_values_through_a_smoothing_masker(tmp_path):
    masker = _volume_masker("MNI152NLin2009cAsym", smoothing_fwhm=8.0)
    rng = np.random.default_rng(0)
    single = np.zeros(masker.n_targets_, np.float32)
    single[::7] = 1.0                                        # spiky: smoothing changes it
    several = rng.standard_normal((3, masker.n_targets_)).astype(np.float32)
    mask = np.asarray(masker.mask_img_.dataobj).astype(bool)
    for values, desc in ((single, "one"), (several, "three")):
        path = save_map(values, masker, tmp_path, {"sub": "01", "desc": desc, "stat": "r"})
        on_disk = np.asarray(nib.load(path).dataobj)
        on_disk = on_disk[mask] if on_disk.ndim == 3 else on_disk[mask].T
        np.testing.assert_array_equal(on_disk, values)          # nibabel reference
        back = load_map(path, masker)
        assert back.shape == values.shape and back.dtype == np.float32
        np.testing.assert_array_equal(back, values)
    # the masker's own reading smooths: the map would not come back
    smoothed = masker.nifti_masker_.transform(nib.load(path))
    assert np.abs(smoothed - several).max() > 0.1


def test_load_map_refuses_a_map_on_another_grid(tmp_path):
    masker = _volume_masker("MNI152NLin2009cAsym")
    other = _volume_masker("MNI152NLin2009cAsym", shape=(10, 14, 12))
    path = save_map(np.ones(other.n_targets_), other, tmp_path, {"sub": "01", "stat": "r"})
    with pytest.raises(ValueError, match=r"grid shape \(10, 14, 12\).*shape \(12, 14, 12\)"):
        load_map(path, masker)


# --------------------------------------------------------------------------- user files

def test_user_label_gifti_has_the_medial_wall_of_the_builtin_yeo_atlas(tmp_path):
    yeo = load_atlas("yeo7", "fsaverage5")
    n = yeo.n_targets // 2
    paths = []
    for hemi, part in (("L", yeo.data[:n]), ("R", yeo.data[n:])):
        path = tmp_path / f"yeo7_hemi-{hemi}.label.gii"
        nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(
            part.astype(np.int32), intent="NIFTI_INTENT_LABEL")]), path)
        paths.append(str(path))
    user = load_atlas(paths, labels=list(yeo.labels))
    np.testing.assert_array_equal(user.medial_wall, yeo.data == 0)
    assert user.medial_wall.sum() == yeo.medial_wall.sum() > 1500
    rng = np.random.default_rng(0)
    maps = (yeo.data == 7).astype(float)[None] + rng.standard_normal((1, yeo.n_targets))
    mapping = map_patterns(maps, user, null="permutation", n_perm=20, tail="empirical")
    cortex = yeo.data > 0
    for k in range(7):
        reference = np.corrcoef(maps[0, cortex], (yeo.data[cortex] == k + 1))[0, 1]
        np.testing.assert_allclose(mapping.statistics["correlation"][0, k], reference,
                                   rtol=1e-10)
    assert mapping.provenance["n_valid_targets"] == int(cortex.sum())


def test_one_volume_4d_nifti_is_a_weight_map_not_labels(tmp_path):
    weights = np.linspace(0, 0.9, 8 * 8 * 8).reshape(8, 8, 8).astype(np.float32)
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(weights[..., None], np.eye(4)), path)
    atlas = load_atlas(str(path), labels=["net"])
    assert atlas.probabilistic and atlas.data.shape == (1, 512)
    np.testing.assert_allclose(atlas.data[0], weights.ravel(), rtol=1e-6)
    low = tmp_path / "low.nii.gz"
    nib.save(nib.Nifti1Image((0.4 * weights / weights.max())[..., None], np.eye(4)), low)
    peak = load_atlas(str(low))
    assert peak.labels == ["network_1"] and np.isclose(peak.data.max(), 0.4)
    # labels stored as 4-D: read as labels with the label intent, refused without it
    labels = np.repeat(np.arange(4, dtype=np.int16), 128).reshape(8, 8, 8, 1)
    tagged = nib.Nifti1Image(labels, np.eye(4))
    tagged.header.set_intent("label")
    nib.save(tagged, tmp_path / "tagged.nii.gz")
    as_labels = load_atlas(str(tmp_path / "tagged.nii.gz"))
    assert not as_labels.probabilistic and as_labels.n_networks == 3
    np.testing.assert_array_equal(as_labels.data, labels.ravel())
    nib.save(nib.Nifti1Image(labels, np.eye(4)), tmp_path / "untagged.nii.gz")
    with pytest.raises(ValueError, match="label map stored as 4-D"):
        load_atlas(str(tmp_path / "untagged.nii.gz"))


def test_one_array_gifti_without_label_intent_is_a_weight_map(tmp_path):
    rng = np.random.default_rng(0)
    weights = rng.random(642).astype(np.float32)
    paths = []
    for hemi in ("L", "R"):
        paths.append(tmp_path / f"w_hemi-{hemi}.func.gii")
        nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(weights)]), paths[-1])
    atlas = load_atlas(paths)
    assert atlas.probabilistic and atlas.data.shape == (1, 1284)
    np.testing.assert_allclose(atlas.data[0], np.concatenate([weights, weights]), rtol=1e-7)
    assert atlas.medial_wall is None and atlas.space == "fsaverage3"


# --------------------------------------------------------------------------- assignments

def test_assignments_of_a_none_row_describe_the_network_of_its_confidence():
    rng = np.random.default_rng(1)
    atlas = Atlas("toy", "roi", ["A", "B", "C", "Empty"], np.repeat([1, 2, 3], 100))
    mapping = map_patterns(rng.standard_normal((1, 300)), atlas, null="permutation",
                           n_perm=99, tail="empirical")
    assert mapping.assigned == ["none"]
    assert np.isnan(mapping.statistics["correlation"][0, 3])   # empty network: undefined
    best = int(np.argmin(mapping.p_fdr["correlation"][0]))
    row = mapping.assignments().iloc[0]
    assert np.isfinite(row["correlation"])
    assert row["correlation"] == mapping.statistics["correlation"][0, best]
    assert row["p_fdr_correlation"] == mapping.p_fdr["correlation"][0, best]
    np.testing.assert_allclose(row["confidence"], 1 - row["p_fdr_correlation"])


def test_a_study_on_volume_data_in_a_native_space_refuses_an_mni_atlas():
    """`brainalign run` hands the atlas the data's masker, so its declared space is checked:
    fMRIPrep's T1w space cannot take an MNI atlas by world coordinates."""
    from types import SimpleNamespace

    from nilearn.datasets import load_mni152_brain_mask

    from brainalign.brain import VolumeMasker
    from brainalign.pipeline.study import Study

    mask = load_mni152_brain_mask(resolution=8)
    masker = VolumeMasker(mask_img=mask, space="T1w").fit()
    study = SimpleNamespace(config={"networks": {"atlas": "dosenbach"},
                                    "fmri": {"source": "nifti"}})
    data = SimpleNamespace(mask_img=mask, masker=masker)
    with pytest.raises(ValueError, match="'T1w', which is not an MNI template"):
        Study.mapping_atlas(study, "data", data)
