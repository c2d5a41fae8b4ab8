"""save_map / load_map: values -> NIfTI / GIfTI / TSV -> values, sidecars and file names."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign.brain import BrainData, RoiTableMasker, SurfaceMasker, VolumeMasker
from brainalign.export import bids_name, load_map, save_encoding_maps, save_map
from brainalign.provenance import config_hash

SIDECAR = {"model": "smollm2-135m", "site": "mlp.out", "layers": [3, 4], "features": "atoms",
           "delays": np.array([1, 2, 3, 4]), "cv": {"outer": "leave-one-run-out", "inner": 5},
           "alphas": np.logspace(0, 3, 4)}


def volume_masker():
    mask = np.zeros((5, 6, 4), dtype=np.uint8)
    mask[1:4, 1:5, 1:3] = 1
    mask_img = nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0]))
    return VolumeMasker(mask_img=mask_img, space="MNI152NLin2009cAsym").fit(), mask.astype(bool)


def test_bids_name_orders_entities_and_rejects_bad_labels():
    name = bids_name({"stat": "r", "desc": "atom03", "hemi": "L", "space": "fsaverage5", "sub": "01"},
                     "map", ".func.gii")
    assert name == "sub-01_space-fsaverage5_hemi-L_desc-atom03_stat-r_map.func.gii"
    assert bids_name({"sub": "01", "res": None, "desc": "x"}) == "sub-01_desc-x_map"
    with pytest.raises(ValueError, match="alphanumeric"):
        bids_name({"desc": "atom_03"})


def test_volume_map_round_trip_name_and_sidecar(tmp_path):
    masker, mask = volume_masker()
    values = np.random.default_rng(0).standard_normal(masker.n_targets_).astype(np.float32)
    path = save_map(values, masker, tmp_path, entities={"sub": "01", "desc": "wordrate", "stat": "r"},
                    sidecar=SIDECAR)
    assert path.name == "sub-01_space-MNI152NLin2009cAsym_res-2_desc-wordrate_stat-r_map.nii.gz"
    img = nib.load(path)
    assert img.shape == mask.shape
    np.testing.assert_array_equal(np.asarray(img.dataobj)[mask], values)
    np.testing.assert_array_equal(load_map(path, masker), values)
    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["model"] == "smollm2-135m" and sidecar["site"] == "mlp.out"
    assert sidecar["delays"] == [1, 2, 3, 4] and sidecar["alphas"] == pytest.approx([1, 10, 100, 1000])
    expected_hash = config_hash({k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                 for k, v in SIDECAR.items()})
    assert sidecar["config_hash"] == expected_hash
    assert sidecar["versions"]["nilearn"] and sidecar["created_utc"]
    assert sidecar["map"]["n_targets"] == masker.n_targets_ and sidecar["map"]["space"] == "MNI152NLin2009cAsym"
    # several maps -> one 4D image, read back in order
    maps = np.random.default_rng(1).standard_normal((3, masker.n_targets_)).astype(np.float32)
    path = save_map(maps, masker, tmp_path, entities={"desc": "atoms", "stat": "coef"})
    assert nib.load(path).shape == mask.shape + (3,)
    np.testing.assert_array_equal(load_map(path, masker), maps)


def test_surface_map_one_gifti_per_hemisphere(tmp_path):
    n_vertices = 10242
    keep = np.ones(n_vertices, dtype=bool)
    keep[:300] = False
    masker = SurfaceMasker(mask={"L": keep, "R": keep}).fit()
    values = np.random.default_rng(2).standard_normal(masker.n_targets_).astype(np.float32)
    brain = BrainData(np.zeros((4, masker.n_targets_)), np.zeros(4, int), masker.space_, masker,
                      valid_targets=np.ones(masker.n_targets_, bool), first_volume_s=0.0)
    path = save_map(values, brain, tmp_path, entities={"sub": "01", "desc": "atom03", "stat": "r"},
                    sidecar={"model": "tiny"})
    assert path.name == "sub-01_space-fsaverage5_hemi-L_desc-atom03_stat-r_map.func.gii"
    right = path.with_name(path.name.replace("hemi-L", "hemi-R"))
    left_data = nib.load(path).darrays[0].data
    np.testing.assert_array_equal(left_data[keep], values[: keep.sum()])
    np.testing.assert_array_equal(nib.load(right).darrays[0].data[keep], values[keep.sum():])
    assert nib.load(path).meta["AnatomicalStructurePrimary"] == "CortexLeft"
    np.testing.assert_array_equal(load_map(right, masker), values)
    sidecar = json.loads(right.with_name(right.name.replace(".func.gii", ".json")).read_text())
    assert sidecar["map"]["hemi"] == "R" and sidecar["model"] == "tiny"
    assert sidecar["map"]["hemisphere_files"]["L"] == path.name


def test_roi_map_tsv_round_trip(tmp_path):
    masker = RoiTableMasker(names=["LATL", "RATL", "LIFG"]).fit()
    values = np.array([[0.1, -0.2, 0.35], [0.0, 1.5, np.nan]], dtype=np.float32)
    path = save_map(values, masker, tmp_path, entities={"sub": "group", "desc": "llm", "stat": "r"},
                    sidecar=SIDECAR)
    assert path.name == "sub-group_space-roi_desc-llm_stat-r_map.tsv"
    table = pd.read_csv(path, sep="\t")
    assert list(table.columns) == ["LATL", "RATL", "LIFG"]
    np.testing.assert_array_equal(load_map(path, masker), values)
    assert json.loads(path.with_suffix(".json").read_text())["map"]["target_names"] == ["LATL", "RATL", "LIFG"]


def test_save_map_checks_shapes_and_masker(tmp_path):
    masker, _ = volume_masker()
    with pytest.raises(ValueError, match=r"shape \(24,\) or \(n_maps, 24\)"):
        save_map(np.zeros(5), masker, tmp_path)
    with pytest.raises(ValueError, match="fitted brainalign masker"):
        save_map(np.zeros(5), VolumeMasker(), tmp_path)


def test_save_encoding_maps_writes_each_statistic_with_nan_for_invalid_targets(tmp_path):
    from brainalign.encoding.result import EncodingResult

    rng = np.random.default_rng(3)
    masker = RoiTableMasker(names=["A", "B", "C", "D"]).fit()
    valid = np.array([True, True, False, True])
    result = EncodingResult(
        r=rng.uniform(-0.1, 0.5, 4), r2=rng.uniform(-0.1, 0.2, 4), alphas=np.array([1.0, 10, 100, 1]),
        coef=rng.standard_normal((6, 4)), intercept=np.zeros(4), p_values=rng.uniform(0, 1, 4),
        p_fdr=rng.uniform(0, 1, 4), solver="primal", cv={"outer": "leave-one-run-out"},
        valid_targets=valid, delays=[1, 2, 3], provenance={"model": "tiny"})
    paths = save_encoding_maps(result, masker, tmp_path, entities={"sub": "01", "desc": "llm"},
                               sidecar={"site": "mlp.out"}, coef=True)
    assert sorted(paths) == ["alpha", "coef", "p", "pfdr", "r", "r2"]
    assert paths["r"].name == "sub-01_space-roi_desc-llm_stat-r_map.tsv"
    r = load_map(paths["r"], masker)
    np.testing.assert_allclose(r[valid], result.r[valid], rtol=1e-6)
    assert np.isnan(r[2])
    coef = load_map(paths["coef"], masker)
    assert coef.shape == (6, 4) and np.isnan(coef[:, 2]).all()
    np.testing.assert_allclose(coef[:, valid], result.coef[:, valid], rtol=1e-6)
    sidecar = json.loads(paths["pfdr"].with_suffix(".json").read_text())
    assert sidecar["solver"] == "primal" and sidecar["delays"] == [1, 2, 3]
    assert sidecar["statistic"] == "pfdr" and sidecar["site"] == "mlp.out"
    assert sidecar["encoding_provenance"] == {"model": "tiny"}
    assert sidecar["config_hash"] == json.loads(paths["r"].with_suffix(".json").read_text())["config_hash"]
