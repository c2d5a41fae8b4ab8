"""save_map / load_map: values -> NIfTI / GIfTI / TSV -> values, sidecars and file names."""

from __future__ import annotations

import json
import types
from pathlib import Path

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


def test_p_value_maps_hold_nan_outside_the_mask_and_effect_maps_zero(tmp_path):
    """A p map with 0 outside the brain would pass any p < .05 threshold in a viewer: the
    encoding's p / pfdr maps hold NaN there (volume and surface), r keeps 0, and each
    sidecar states its value; the values inside the mask are unchanged."""
    from brainalign.encoding.result import EncodingResult

    volume, mask = volume_masker()
    keep = np.ones(10242, dtype=bool)
    keep[:300] = False
    surface = SurfaceMasker(mask={"L": keep, "R": keep}).fit()
    for masker, read in ((volume, lambda path: np.asarray(nib.load(path).dataobj)[~mask]),
                         (surface, lambda path: nib.load(path).darrays[0].data[~keep])):
        rng = np.random.default_rng(5)
        n = masker.n_targets_
        result = EncodingResult(
            r=rng.uniform(-0.1, 0.5, n), r2=rng.uniform(-0.1, 0.2, n), alphas=np.ones(n),
            coef=rng.standard_normal((2, n)), intercept=np.zeros(n),
            p_values=rng.uniform(0, 1, n), p_fdr=rng.uniform(0, 1, n), solver="primal",
            cv={}, valid_targets=np.ones(n, bool), delays=[1], provenance={})
        paths = save_encoding_maps(result, masker, tmp_path / masker.space_)
        for stat in ("p", "pfdr"):
            assert np.isnan(read(paths[stat])).all()
            np.testing.assert_allclose(load_map(paths[stat], masker),
                                       getattr(result, {"p": "p_values", "pfdr": "p_fdr"}[stat]),
                                       rtol=1e-6)
            sidecar = paths[stat].with_name(paths[stat].name.split(".")[0] + ".json")
            assert json.loads(sidecar.read_text())["map"]["outside_mask_value"] == "NaN"
        assert (read(paths["r"]) == 0).all()
        sidecar = paths["r"].with_name(paths["r"].name.split(".")[0] + ".json")
        assert json.loads(sidecar.read_text())["map"]["outside_mask_value"] == 0.0


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


def test_nan_inside_the_mask_and_numeric_or_reordered_roi_names_read_back_as_written(tmp_path):
    """An untested voxel's NaN p stays NaN (nilearn's default read gives 0, 'significant');
    an ROI table's header is its names even when they look like numbers, and columns are
    matched to the masker's ROIs by name."""
    volume, _ = volume_masker()
    p_values = np.linspace(0.01, 0.9, volume.n_targets_).astype(np.float32)
    p_values[[0, 5]] = np.nan
    path = save_map(p_values, volume, tmp_path, {"stat": "p", "desc": "nan"})
    back = load_map(path, volume)
    assert np.isnan(back[[0, 5]]).all()
    np.testing.assert_allclose(np.delete(back, [0, 5]), np.delete(p_values, [0, 5]))

    numeric = RoiTableMasker(names=["1", "2", "3"]).fit()
    values = np.array([0.1, -0.2, np.nan], dtype=np.float32)
    back = load_map(save_map(values, numeric, tmp_path, {"stat": "r", "desc": "numeric"}), numeric)
    assert back.shape == (3,)
    np.testing.assert_array_equal(back, values)
    renamed = RoiTableMasker(names=["b", "a"]).fit(pd.DataFrame(np.ones((4, 2)), columns=["a", "b"]))
    path = save_map(np.array([1.0, 2.0]), renamed, tmp_path, {"stat": "r", "desc": "renamed"})
    np.testing.assert_array_equal(load_map(path, renamed), [1.0, 2.0])
    with pytest.raises(ValueError, match="not among them"):
        load_map(path, RoiTableMasker(names=["a", "c"]).fit())
    repeated = RoiTableMasker().fit(pd.DataFrame(np.ones((4, 3)), columns=["V1", "x", "x"]))
    path = save_map(np.array([1.0, 2.0, 3.0]), repeated, tmp_path, {"stat": "r", "desc": "repeated"})
    np.testing.assert_array_equal(load_map(path, repeated), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="repeated names"):
        load_map(path, RoiTableMasker(names=["x", "V1", "x"]).fit())


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


# -- maps that viewers read right ---------------------------------------------------------

class _Result:
    """The parts of an EncodingResult that Study.export reads."""

    def __init__(self, rng, n_targets, subject, invalid=()):
        self.valid_targets = np.ones(n_targets, bool)
        self.valid_targets[list(invalid)] = False  # not fitted (e.g. constant): r 0, no p
        self.r = np.where(self.valid_targets, rng.uniform(-0.1, 0.5, n_targets), 0.0)
        self.partition = {"bands": ["atoms", "wordrate"], "r_unique": np.where(
            self.valid_targets, rng.uniform(-0.05, 0.2, (2, n_targets)), np.nan)}
        self.bands = [{"name": "atoms", "delays": [1, 2]}, {"name": "wordrate", "delays": []}]
        self.p_fdr = np.where(self.valid_targets, rng.uniform(0, 0.2, n_targets), np.nan)
        self.provenance = {"subject": subject}

    def significant(self, q=0.05):
        return np.nan_to_num(self.p_fdr, nan=1.0) < q


class _Cache:
    def __init__(self, root):
        self.root = root

    def is_complete(self, name, config):
        return name == "group"

    def path(self, name, config):
        return self.root / name


def small_mni_mask():
    """A block of voxels of nilearn's 3 mm MNI152 mask, on its grid (a fast volume space)."""
    from brainalign.pipeline.spaces import mni_mask

    brain = mni_mask("MNI152_3mm")
    block = np.zeros(brain.shape, np.uint8)
    block[20:30, 30:40, 25:33] = 1
    return nib.Nifti1Image(block * (np.asarray(brain.dataobj) > 0), brain.affine)


def two_space_study(root):
    """A Study whose stages are stand-ins: one model, spaces fsaverage5, MNI152_3mm and roi."""
    from brainalign.pipeline.group_stage import build_group
    from brainalign.pipeline.spaces import space_masker
    from brainalign.pipeline.study import Study

    spaces = ["fsaverage5", "MNI152_3mm", "roi"]
    maskers = {"fsaverage5": space_masker("fsaverage5", 20484),
               "MNI152_3mm": space_masker("MNI152_3mm", int(np.asarray(
                   small_mni_mask().dataobj).sum()), mask_img=small_mni_mask()),
               "roi": space_masker("roi", 12)}
    rng = np.random.default_rng(0)
    # ROI 0 fitted in no subject, ROI 1 in all but sub-01
    results = {space: [_Result(rng, maskers[space].n_targets_, f"sub-{i:02d}",
                               invalid=[0, 1][:2 if i == 1 else 1] if space == "roi" else ())
                       for i in (1, 2, 3)] for space in spaces}
    patterns = {space: rng.standard_normal((3, maskers[space].n_targets_)) for space in spaces}

    class StandInStudy(Study):
        def __init__(self):  # no stories or models: the stages' outputs are given
            self.config = {"study": {"seed": 0},
                           "model": {"sites": ["mlp.out"], "layers": "all"},
                           "stories": {"tr_s": 2.0}, "scan": {},
                           "timecourse": {"method": "lanczos", "trim": [0, 0]},
                           "cleaning": {"high_pass_hz": 1 / 128},
                           "fmri": {"source": "simulated", "spaces": spaces},
                           "encoding": {"bands": ["atoms", "wordrate"], "atoms_per_fold": True,
                                        "delays": [1, 2], "n_permutations": 10, "fdr_q": 0.05},
                           "group": {"method": "maxt", "n_perm": 20, "tail": 1,
                                     "cluster_p": 0.001, "alpha": 0.05}}
            self.out = root / "out"
            self.cache = _Cache(root / "cache")
            self.models = [("tiny-llm", "org/tiny-llm")]
            self.notes, self.runs, self.design = [], [], None  # not a BIDS study

        def encodings(self, slug, space, whole_story_atoms=False):
            return results[space]

        def pattern_maps(self, slug, space):
            return patterns[space]

        def brain(self, slug, space):
            return types.SimpleNamespace(masker=maskers[space], simulation=object())

        def networks_file(self, slug, space, name):
            return root / "no-networks" / name

    study = StandInStudy()
    build_group(study, study.cache.path("group", study.config))
    return study


def entities_of(path):
    stem = path.name.split(".")[0]
    return dict(part.split("-", 1) for part in stem.split("_")[:-1])


@pytest.fixture(scope="module")
def exported_study(tmp_path_factory):
    study = two_space_study(tmp_path_factory.mktemp("export"))
    maps, _ = study.export()
    return study, maps


def test_study_export_sidecars_name_the_model_space_stat_and_desc_of_every_space(exported_study):
    study, maps = exported_study
    (slug, name), = study.models
    labels = {"fsaverage5": "fsaverage5", "MNI152_3mm": "MNI152NLin2009aSym", "roi": "roi"}
    expected = {("encoding", "r"), ("patterns", "coef"), ("uniqueatoms", "r"),
                ("uniquewordrate", "r"), ("encoding", "fracsig")}
    expected |= {(desc, stat) for desc in ("group", "groupuniqueatoms", "groupuniquewordrate")
                 for stat in ("t", "pfwe", "mean")}
    sidecars = sorted((study.out / "maps").glob("*.json"))
    map_files = [p for p in (study.out / "maps").iterdir() if p.suffix != ".json"]
    assert len(sidecars) == len(map_files) == len(expected) * (2 + 1 + 1)  # L, R, volume, roi
    seen = {space: set() for space in labels}
    for path in sidecars:
        sidecar = json.loads(path.read_text())
        entities = entities_of(path)
        space = sidecar["study_space"]
        assert sidecar["model"] == name, path.name  # every space, not only the first
        if "delays_tr" in sidecar:  # maps of the encoding: each band's delays as fitted
            assert sidecar["delays_tr"] == {"atoms": [1, 2], "wordrate": []}, path.name
        assert entities["model"] == slug.replace("-", "")
        assert sidecar["space"] == entities["space"] == labels[space], path.name
        assert sidecar["map"]["space"] == labels[space]
        assert (sidecar["desc"], sidecar["stat"]) == (entities["desc"], entities["stat"])
        assert sidecar["map"]["file"].startswith(path.name[:-len(".json")])
        seen[space].add((sidecar["desc"], sidecar["stat"]))
    assert seen == {space: expected for space in labels}
    for space in labels:  # the summary's paths, both hemispheres included
        assert all(Path(p).exists() for p in maps[f"{slug}/{space}"].values())
    assert "r_right" in maps[f"{slug}/fsaverage5"]


def test_subject_averaged_maps_are_nan_where_no_subject_was_fitted(exported_study):
    """A target no subject was fitted at is NaN (not an r of 0), and a subject without the
    target neither pulls the mean towards 0 nor counts as non-significant."""
    from brainalign.export import load_map

    study, maps = exported_study
    (slug, _), = study.models
    roi = maps[f"{slug}/roi"]
    results = study.encodings(slug, "roi")
    masker = study.brain(slug, "roi").masker
    r = load_map(roi["r"], masker)
    assert np.isnan(r[0])
    np.testing.assert_allclose(r[1], np.mean([x.r[1] for x in results[1:]]), rtol=1e-6)
    np.testing.assert_allclose(r[2:], np.mean([x.r[2:] for x in results], axis=0), rtol=1e-6)
    unique = load_map(roi["unique_r_atoms"], masker)
    assert np.isnan(unique[0])
    np.testing.assert_allclose(unique[1], np.mean([x.partition["r_unique"][0, 1]
                                                   for x in results[1:]]), rtol=1e-6)
    fraction = load_map(roi["significant_fraction"], masker)
    assert np.isnan(fraction[0])
    assert fraction[1] == np.mean([x.p_fdr[1] < 0.05 for x in results[1:]])
    np.testing.assert_allclose(fraction[2:], np.mean([x.p_fdr[2:] < 0.05 for x in results],
                                                     axis=0), rtol=1e-6)
    sidecar = json.loads(Path(roi["r"]).with_suffix(".json").read_text())
    assert "NaN where no subject was fitted" in sidecar["description"]


def test_exported_nifti_is_mni_coded_in_mm_and_gifti_arrays_are_named(exported_study):
    study, maps = exported_study
    (slug, _), = study.models
    volume = maps[f"{slug}/MNI152_3mm"]
    assert "space-MNI152NLin2009aSym_res-3" in Path(volume["r"]).name
    for key in ("r", "patterns", "group_t"):
        header = nib.load(volume[key]).header
        assert int(header["sform_code"]) == 4 and int(header["qform_code"]) == 4, key
        assert header.get_xyzt_units()[0] == "mm"
        np.testing.assert_allclose(header.get_qform(), header.get_sform(), atol=1e-4)
        np.testing.assert_allclose(header.get_sform(), small_mni_mask().affine, atol=1e-4)
    surface = maps[f"{slug}/fsaverage5"]
    for key in ("patterns", "patterns_right"):
        image = nib.load(surface[key])
        assert [d.meta["Name"] for d in image.darrays] == ["atom00", "atom01", "atom02"]
    assert [d.meta["Name"] for d in nib.load(surface["r"]).darrays] == ["r"]
    assert [d.meta["Name"] for d in nib.load(surface["group_pfwe_right"]).darrays] == ["pfwe"]
    sidecar = json.loads(Path(volume["patterns"].replace(".nii.gz", ".json")).read_text())
    assert sidecar["map"]["map_names"] == ["atom00", "atom01", "atom02"]


def test_exported_maps_load_in_nilearn_plotting(exported_study):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import datasets, plotting
    from nilearn.image import index_img
    from nilearn.surface import load_surf_data

    study, maps = exported_study
    (slug, _), = study.models
    volume = maps[f"{slug}/MNI152_3mm"]
    plotting.plot_stat_map(volume["r"], display_mode="ortho")
    plotting.plot_stat_map(index_img(volume["patterns"], 2), display_mode="z", cut_coords=2)
    fsaverage = datasets.load_fsaverage("fsaverage5")
    surface = maps[f"{slug}/fsaverage5"]
    for key, hemi in (("r", "left"), ("r_right", "right")):
        plotting.plot_surf_stat_map(fsaverage["inflated"].parts[hemi], surface[key], hemi=hemi)
    atoms = load_surf_data(surface["patterns"])
    assert atoms.shape == (10242, 3)
    plotting.plot_surf_stat_map(fsaverage["inflated"].parts["left"], atoms[:, 1], hemi="left")
    plt.close("all")


def test_volume_maps_carry_the_masker_space_code(tmp_path):
    masker, _ = volume_masker()  # MNI152NLin2009cAsym: code 4
    path = save_map(np.ones(masker.n_targets_, np.float32), masker, tmp_path, {"stat": "r"})
    header = nib.load(path).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (4, 4)
    assert header.get_xyzt_units() == ("mm", "unknown")
    other = VolumeMasker(mask_img=masker.mask_img, space="T1w").fit()  # not a template: aligned
    header = nib.load(save_map(np.ones(other.n_targets_, np.float32), other, tmp_path,
                               {"stat": "r"})).header
    assert (int(header["sform_code"]), int(header["qform_code"])) == (2, 2)
    assert header.get_xyzt_units()[0] == "mm"
    with pytest.raises(ValueError, match="names: 1 given for 2 maps"):
        save_map(np.ones((2, masker.n_targets_), np.float32), masker, tmp_path, {"stat": "r"},
                 names=["a"])
