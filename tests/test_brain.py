"""Maskers (volume, surface, ROI table) and BrainData on small generated images and tables."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import shared_data
from nilearn.signal import clean
from scipy.stats import zscore

from brainalign.brain import (BrainData, RoiTableMasker, SurfaceMasker, VolumeMasker,
                              find_invalid_targets, load_brain, read_gifti_series, read_table)
from brainalign.stimuli.story import Story, Word
from brainalign.timecourse import runs_from_lengths

ALICE_ROIS = ["LATL", "RATL", "LPTL", "LIPL", "LPreM", "LIFG"]


# ---------------------------------------------------------------- ROI tables
def test_read_table_with_and_without_header(tmp_path):
    values = np.random.default_rng(0).standard_normal((12, 3))
    pd.DataFrame(values, columns=["a", "b", "c"]).to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    np.savetxt(tmp_path / "t.txt", values, fmt="%.10e")
    got, names = read_table(tmp_path / "t.tsv")
    np.testing.assert_allclose(got, values, atol=1e-12)
    assert names == ["a", "b", "c"]
    got, names = read_table(tmp_path / "t.txt")
    np.testing.assert_allclose(got, values, rtol=1e-9)
    assert names is None


def test_roi_table_masker_round_trip_and_names(tmp_path):
    values = np.random.default_rng(1).standard_normal((20, 4)) + 5
    np.savetxt(tmp_path / "rois.txt", values)
    masker = RoiTableMasker(names=["A", "B", "C", "D"])
    np.testing.assert_allclose(masker.fit_transform(tmp_path / "rois.txt"), values)
    table = masker.inverse_transform(np.arange(4.0))
    assert list(table.columns) == ["A", "B", "C", "D"] and table.to_numpy().tolist() == [[0, 1, 2, 3]]
    assert masker.inverse_transform(np.ones((3, 4))).shape == (3, 4)
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(n_maps, 4\)"):
        masker.inverse_transform(np.ones(5))
    with pytest.raises(ValueError, match="names has 2 entries but the table has 4"):
        RoiTableMasker(names=["A", "B"]).fit(values)
    assert RoiTableMasker().fit(values).target_names_ == ["roi000", "roi001", "roi002", "roi003"]


def test_roi_tables_of_other_subjects_are_matched_by_roi_name(tmp_path):
    """A second subject's table listing the same ROIs in another order is read in the
    fitted order; one naming other ROIs is refused (by position, A1's values would sit
    under IFG's name)."""
    rng = np.random.default_rng(3)
    first = pd.DataFrame(rng.standard_normal((12, 3)), columns=["A1", "IFG", "ATL"])
    first.to_csv(tmp_path / "sub-01.tsv", sep="\t", index=False)
    second = pd.DataFrame(rng.standard_normal((12, 3)), columns=["A1", "IFG", "ATL"])
    second[["ATL", "A1", "IFG"]].to_csv(tmp_path / "sub-02.tsv", sep="\t", index=False)
    masker = RoiTableMasker().fit(tmp_path / "sub-01.tsv")
    assert masker.target_names_ == ["A1", "IFG", "ATL"]
    np.testing.assert_allclose(masker.transform(tmp_path / "sub-02.tsv"), second.to_numpy())
    np.testing.assert_allclose(masker.transform(tmp_path / "sub-01.tsv"), first.to_numpy())
    second.rename(columns={"ATL": "PTL"}).to_csv(tmp_path / "sub-03.tsv", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"missing \['ATL'\], not expected \['PTL'\]"):
        masker.transform(tmp_path / "sub-03.tsv")
    # a table without a header is read by position, as before
    np.testing.assert_allclose(masker.transform(second.to_numpy()), second.to_numpy())


def test_roi_table_cleaning_is_per_run_and_removes_confounds():
    rng = np.random.default_rng(2)
    run0, run1 = rng.standard_normal((30, 3)) + 10, rng.standard_normal((25, 3)) * 4 - 3
    confound = rng.standard_normal((55, 1))
    both = np.vstack([run0, run1]) + 2.0 * confound
    masker = RoiTableMasker(detrend=True, standardize="zscore_sample", run_lengths=[30, 25])
    got = masker.fit_transform(both, confounds=confound)
    expected = np.vstack([
        clean(both[:30], detrend=True, standardize="zscore_sample", confounds=confound[:30]),
        clean(both[30:], detrend=True, standardize="zscore_sample", confounds=confound[30:]),
    ])
    np.testing.assert_allclose(got, expected, atol=1e-10)
    for part in (slice(0, 30), slice(30, 55)):
        np.testing.assert_allclose(got[part].mean(0), 0, atol=1e-10)
        np.testing.assert_allclose(got[part].std(0, ddof=1), 1, atol=1e-10)
        assert np.abs(np.corrcoef(got[part, 0], confound[part, 0])[0, 1]) < 1e-8
    # one table per run gives the same as the concatenation with run_lengths
    per_run = RoiTableMasker(detrend=True, standardize="zscore_sample")
    np.testing.assert_allclose(per_run.fit_transform([both[:30], both[30:]],
                                                     confounds=[confound[:30], confound[30:]]),
                               got, atol=1e-10)


# ---------------------------------------------------------------- volumes
def make_volume(rng, n_tr, shape=(6, 7, 5)):
    data = rng.standard_normal(shape + (n_tr,)).astype(np.float32) * 3 + 50
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return nib.Nifti1Image(data, affine), data


def make_mask(shape=(6, 7, 5)):
    mask = np.zeros(shape, dtype=np.uint8)
    mask[1:5, 2:6, 1:4] = 1
    return nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0])), mask.astype(bool)


def test_volume_masker_transform_and_inverse_round_trip():
    rng = np.random.default_rng(3)
    img, data = make_volume(rng, 15)
    mask_img, mask = make_mask()
    masker = VolumeMasker(mask_img=mask_img, space="MNI152NLin2009cAsym").fit()
    assert masker.n_targets_ == mask.sum() == 48 and masker.resolution_mm_ == 2.0
    signals = masker.transform(img)
    np.testing.assert_allclose(signals, data[mask].T, rtol=1e-6)
    values = rng.standard_normal(48)
    back = masker.inverse_transform(values)
    assert back.shape == mask.shape
    np.testing.assert_allclose(back.get_fdata()[mask], values, rtol=1e-6)
    assert np.all(back.get_fdata()[~mask] == 0)
    maps = masker.inverse_transform(rng.standard_normal((3, 48)))
    assert maps.shape == mask.shape + (3,)


def test_volume_masker_standardises_each_run():
    rng = np.random.default_rng(4)
    (img0, data0), (img1, data1) = make_volume(rng, 20), make_volume(rng, 16)
    mask_img, mask = make_mask()
    masker = VolumeMasker(mask_img=mask_img, standardize="zscore_sample").fit()
    got = masker.transform([img0, img1])
    expected = np.vstack([zscore(data0[mask].T, ddof=1), zscore(data1[mask].T, ddof=1)])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    from nilearn.image import concat_imgs

    concatenated = VolumeMasker(mask_img=mask_img, standardize="zscore_sample",
                                run_lengths=[20, 16]).fit()
    np.testing.assert_allclose(concatenated.transform(concat_imgs([img0, img1])), got, atol=1e-6)


# ---------------------------------------------------------------- surfaces
def write_gifti(path, series, one_array_per_tr=True):
    if one_array_per_tr:
        darrays = [nib.gifti.GiftiDataArray(row.astype(np.float32)) for row in series]
    else:
        darrays = [nib.gifti.GiftiDataArray(series.T.astype(np.float32))]
    nib.save(nib.gifti.GiftiImage(darrays=darrays), path)
    return path


def test_surface_masker_reads_fsaverage5_gifti_and_maps_back(tmp_path):
    rng = np.random.default_rng(5)
    n_vertices, n_tr = 10242, 12
    left, right = rng.standard_normal((n_tr, n_vertices)), rng.standard_normal((n_tr, n_vertices))
    files = {"L": write_gifti(tmp_path / "lh.func.gii", left),
             "R": write_gifti(tmp_path / "rh.func.gii", right, one_array_per_tr=False)}
    np.testing.assert_allclose(read_gifti_series(files["R"], n_vertices), right, rtol=1e-6)
    medial_wall = np.zeros(n_vertices, dtype=bool)
    medial_wall[:500] = True
    masker = SurfaceMasker(mask={"left": ~medial_wall, "right": np.ones(n_vertices, bool)}).fit(files)
    assert masker.space_ == "fsaverage5" and masker.n_targets_ == 2 * n_vertices - 500
    signals = masker.transform(files)
    np.testing.assert_allclose(signals, np.hstack([left[:, 500:], right]), rtol=1e-6)
    values = rng.standard_normal(masker.n_targets_)
    images = masker.inverse_transform(values)
    assert set(images) == {"L", "R"}
    nib.save(images["L"], tmp_path / "map_lh.func.gii")
    reloaded = nib.load(tmp_path / "map_lh.func.gii").darrays[0].data
    np.testing.assert_allclose(reloaded[500:], values[:n_vertices - 500], rtol=1e-6)
    assert np.all(reloaded[:500] == 0)
    np.testing.assert_allclose(images["R"].darrays[0].data, values[n_vertices - 500:], rtol=1e-6)
    with pytest.raises(ValueError, match="different numbers of time points"):
        masker.transform({"L": left, "R": right[:5]})


def test_surface_masker_runs_as_list(tmp_path):
    rng = np.random.default_rng(6)
    runs = [(rng.standard_normal((10, 50)) + 3, rng.standard_normal((10, 50)) - 1) for _ in range(2)]
    masker = SurfaceMasker(standardize="zscore_sample").fit(runs)
    assert masker.space_ is None
    got = masker.transform(runs)
    expected = np.vstack([zscore(np.hstack(pair), ddof=1) for pair in runs])
    np.testing.assert_allclose(got, expected, atol=1e-10)


# ---------------------------------------------------------------- BrainData
def story_with_volumes(n_volumes, first_volume_s=0.0):
    words = tuple(Word(f"w{r}", 1.0, 1.3, r) for r in range(len(n_volumes)))
    return Story("s", words).with_scan(2.0, n_volumes, first_volume_s=first_volume_s)


def test_load_brain_volume_mismatch_is_an_error_unless_truncate(caplog):
    table = np.random.default_rng(7).standard_normal((30, 3))
    masker = RoiTableMasker(run_lengths=[18, 12], standardize="zscore_sample")
    with pytest.raises(ValueError, match=r"run 1: 12 volumes vs 10 stimulus TRs.*truncate=True"):
        load_brain(table, masker, story=story_with_volumes([18, 10]))
    with pytest.raises(ValueError, match="2 run"):
        load_brain(table, masker, n_volumes=[30], first_volume_s=0.0)
    with caplog.at_level(logging.WARNING, logger="brainalign.brain.data"):
        brain = load_brain(table, masker, story=story_with_volumes([18, 10], [0.0, 1.0]),
                           truncate=True)
    assert "truncated" in caplog.text
    assert brain.run_lengths == (18, 10) and brain.data.shape == (28, 3)
    # truncation keeps each run's first volumes, so their stimulus times stay the story's
    assert brain.first_volume_s == (0.0, 1.0)
    assert brain.provenance["first_volume_s"] == [0.0, 1.0]
    assert brain.provenance["truncation"] == [
        {"run": 1, "brain_volumes": 12, "stimulus_trs": 10, "kept": 10}]
    # the truncated run is standardised on the volumes kept
    np.testing.assert_allclose(brain.data[18:], zscore(table[18:28], ddof=1), atol=1e-5)


def test_load_brain_reports_and_excludes_constant_and_nan_targets(caplog):
    rng = np.random.default_rng(8)
    table = rng.standard_normal((40, 5))
    table[:, 1] = 7.0
    table[3, 3] = np.nan
    masker = RoiTableMasker(names=list("abcde"), standardize="zscore_sample", detrend=True)
    with caplog.at_level(logging.WARNING, logger="brainalign.brain.data"):
        brain = load_brain(table, masker, n_volumes=[40], first_volume_s=0.0)
    assert brain.valid_targets.tolist() == [True, False, True, False, True]
    assert "2 of 5 targets excluded" in caplog.text
    report = brain.provenance["excluded_targets"]
    assert report["constant"] == ["b"] and report["non_finite"] == ["d"]
    assert np.all(brain.data[:, [1, 3]] == 0) and np.isfinite(brain.data).all()
    np.testing.assert_allclose(brain.valid_data, clean(table[:, [0, 2, 4]], detrend=True,
                                                       standardize="zscore_sample"), atol=1e-5)
    valid, report = find_invalid_targets(table)
    assert valid.tolist() == [True, False, True, False, True] and report["non_finite"] == [3]


def test_brain_data_checks_shapes():
    with pytest.raises(ValueError, match="runs must have shape"):
        BrainData(np.zeros((10, 2)), np.zeros(9, dtype=int), "roi", first_volume_s=0.0)
    brain = BrainData(np.random.default_rng(9).standard_normal((10, 2)), np.zeros(10, int), "roi",
                      first_volume_s=0.0)
    assert brain.valid_targets.tolist() == [True, True] and brain.n_targets == 2
    assert brain.first_volume_s == (0.0,)


def test_brain_data_knows_the_first_volume_time_of_every_run():
    data, runs = np.random.default_rng(9).standard_normal((10, 2)), runs_from_lengths([6, 4])
    assert BrainData(data, runs, "roi", first_volume_s=[20.0, 4.0]).first_volume_s == (20.0, 4.0)
    assert BrainData(data, runs, "roi", first_volume_s=20).first_volume_s == (20.0, 20.0)
    with pytest.raises(TypeError, match="first_volume_s"):
        BrainData(data, runs, "roi")
    with pytest.raises(ValueError, match=r"first_volume_s must be one number or one per run "
                       r"\(2\), got \[0.0, 2.0, 4.0\]"):
        BrainData(data, runs, "roi", first_volume_s=[0.0, 2.0, 4.0])


def test_load_brain_needs_the_first_volume_time_from_a_story_or_explicitly():
    table = np.random.default_rng(7).standard_normal((30, 3))
    with pytest.raises(ValueError, match=r"load_brain needs the stimulus time of the first "
                       r"volume of each run: pass story=.* or first_volume_s="):
        load_brain(table, RoiTableMasker(), n_volumes=[30])
    with pytest.raises(ValueError, match="either story .* or n_volumes/first_volume_s"):
        load_brain(table, RoiTableMasker(), story=story_with_volumes([30]), first_volume_s=0.0)
    legacy = Story("s", (Word("w", 1.0, 1.3, 0),), tr_s=2.0, n_volumes=(30,))
    with pytest.raises(ValueError, match=r"missing first_volume_s"):
        load_brain(table, RoiTableMasker(), story=legacy)
    brain = load_brain(table, RoiTableMasker(), story=story_with_volumes([30], 0.5))
    assert brain.first_volume_s == (0.5,)


def test_maskers_count_volumes_without_fitting(tmp_path):
    rng = np.random.default_rng(12)
    table = tmp_path / "rois.tsv"
    np.savetxt(table, rng.standard_normal((17, 3)), delimiter="\t", header="a\tb\tc",
               comments="")
    assert RoiTableMasker().count_volumes([table, table]) == [17, 17]
    image, _ = make_volume(rng, 9)
    nib.save(image, tmp_path / "bold.nii.gz")
    assert VolumeMasker().count_volumes(str(tmp_path / "bold.nii.gz")) == [9]
    write_gifti(tmp_path / "lh.func.gii", rng.standard_normal((11, 40)))
    write_gifti(tmp_path / "rh.func.gii", rng.standard_normal((11, 40)))
    assert SurfaceMasker().count_volumes([{"L": tmp_path / "lh.func.gii",
                                           "R": tmp_path / "rh.func.gii"}]) == [11]


def test_real_alice_roi_table():
    path = shared_data("alice_brennan2016", "alice_data_shared", "6mm", "s18-timecourses.txt")
    brain = load_brain(path, RoiTableMasker(names=ALICE_ROIS, standardize="zscore_sample"),
                       n_volumes=[362], first_volume_s=20.0)
    assert brain.data.shape == (362, 6) and brain.valid_targets.all() and brain.space == "roi"
    assert brain.first_volume_s == (20.0,)
    raw = np.loadtxt(path)
    np.testing.assert_allclose(brain.data, zscore(raw, ddof=1), atol=1e-5)
    unusable = shared_data("alice_brennan2016", "alice_data_shared", "6mm", "s33-timecourses.txt")
    assert not load_brain(unusable, RoiTableMasker(names=ALICE_ROIS),
                          first_volume_s=20.0).valid_targets.any()


def test_roi_table_filtering_and_confound_file(tmp_path):
    rng = np.random.default_rng(10)
    t = np.arange(100) * 2.0
    drift = np.outer(t / 200.0, [1.0, -2.0])
    table = rng.standard_normal((100, 2)) + drift
    motion = rng.standard_normal((100, 2))
    pd.DataFrame(motion, columns=["tx", "ty"]).to_csv(tmp_path / "motion.tsv", sep="\t", index=False)
    masker = RoiTableMasker(high_pass=0.01, t_r=2.0).fit(table)
    got = masker.transform(table, confounds=tmp_path / "motion.tsv")
    expected = clean(table, detrend=False, standardize=None, confounds=motion, filter="butterworth",
                     high_pass=0.01, t_r=2.0)
    np.testing.assert_allclose(got, expected, atol=1e-10)
    with pytest.raises(ValueError, match="needs t_r"):
        RoiTableMasker(high_pass=0.01).fit(table).transform(table)
    with pytest.raises(ValueError, match="confounds have 50 rows for 100 TRs"):
        masker.transform(table, confounds=motion[:50])
