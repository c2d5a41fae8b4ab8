"""The synthetic BIDS + fMRIPrep dataset: names, nilearn discovery and confounds, timing
files, the planted response, determinism and consistent volume counts."""

from __future__ import annotations

import hashlib
import json
import math
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign.simulate import SyntheticBids, make_fmriprep_dataset
from brainalign.simulate.bids import (HEMI_VERTICES, MOTION_COLUMNS, SURFACE_SPACE,
                                      VOLUME_SHAPE, VOLUME_SPACE, cosine_regressors,
                                      framewise_displacement, make_stories, story_parts,
                                      volume_grid)

pytestmark = pytest.mark.usefixtures("single_thread")

N_SUBJECTS = 2


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> SyntheticBids:
    return make_fmriprep_dataset(tmp_path_factory.mktemp("bids") / "study",
                                 n_subjects=N_SUBJECTS, random_state=0)


def _runs(ds):
    return [(s, t, i, r) for s in ds.subjects for t in ds.tasks for i, r in enumerate(ds.runs)]


def _confounds(ds, subject, task, run) -> pd.DataFrame:
    return pd.read_csv(ds.files(subject, task, run)["confounds"], sep="\t")


def _surface(ds, subject, task, run) -> np.ndarray:
    files = ds.files(subject, task, run)
    return np.hstack([np.stack([d.data for d in nib.load(files[f"bold_{h}"]).darrays])
                      for h in ("L", "R")]).astype(np.float64)


def _load_confounds(path, **kwargs):
    from nilearn.interfaces.fmriprep import load_confounds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_confounds(str(path), **kwargs)


def _kept_segments(outliers: np.ndarray, n: int, min_length: int) -> np.ndarray:
    """Volumes kept after dropping outliers and every kept stretch shorter than min_length."""
    bad = np.zeros(n, dtype=bool)
    bad[outliers] = True
    start = 0
    while start < n:
        if bad[start]:
            start += 1
            continue
        stop = start
        while stop < n and not bad[stop]:
            stop += 1
        if stop - start < min_length:
            bad[start:stop] = True
        start = stop
    return np.flatnonzero(~bad)


def _partial_r(bold: np.ndarray, regressor: np.ndarray, confounds: np.ndarray) -> np.ndarray:
    """Correlation of each column with the regressor, both residualised on the confounds."""
    basis = np.linalg.qr(np.column_stack([np.ones(len(confounds)), confounds]))[0]
    data = np.column_stack([regressor, bold])
    residual = data - basis @ (basis.T @ data)
    x, y = residual[:, 0], residual[:, 1:]
    return (y * x[:, None]).sum(0) / np.sqrt((y ** 2).sum(0) * (x ** 2).sum())


# --------------------------------------------------------------------------- layout

def test_file_names_follow_bids_and_fmriprep(ds):
    root, deriv = ds.root, ds.derivatives
    assert deriv == root / "derivatives" / "fmriprep"
    assert ds.subjects == ["01", "02"] and ds.runs == ["1", "2"]
    assert ds.tasks == ["lighthouse", "harbour"]
    for name in ("dataset_description.json", "participants.tsv"):
        assert (root / name).is_file()
    assert pd.read_csv(root / "participants.tsv", sep="\t")["participant_id"].tolist() == \
        ["sub-01", "sub-02"]
    raw = json.loads((root / "dataset_description.json").read_text())
    assert raw["DatasetType"] == "raw" and raw["BIDSVersion"]
    derived = json.loads((deriv / "dataset_description.json").read_text())
    assert derived["DatasetType"] == "derivative"
    assert derived["GeneratedBy"][0]["Name"] == "fMRIPrep"
    for task in ds.tasks:
        assert json.loads((root / f"task-{task}_bold.json").read_text()) == \
            {"RepetitionTime": 2.0, "TaskName": task}
    for s, t, _, r in _runs(ds):
        stem = f"sub-{s}_task-{t}_run-{r}"
        func = deriv / f"sub-{s}" / "func"
        expected = [root / f"sub-{s}" / "func" / f"{stem}_events.tsv",
                    root / "stimuli" / "gentle" / f"{t}_part{r}" / "align.json",
                    func / f"{stem}_hemi-L_space-fsaverage5_bold.func.gii",
                    func / f"{stem}_hemi-R_space-fsaverage5_bold.func.gii",
                    func / f"{stem}_space-MNI152NLin2009cAsym_res-6_desc-preproc_bold.nii.gz",
                    func / f"{stem}_space-MNI152NLin2009cAsym_res-6_desc-brain_mask.nii.gz",
                    func / f"{stem}_desc-confounds_timeseries.tsv",
                    func / f"{stem}_desc-confounds_timeseries.json"]
        for path in expected:
            assert path.is_file(), path
        assert set(ds.files(s, t, r).values()) == set(expected)
        sidecar = json.loads((func / f"{stem}_hemi-L_space-fsaverage5_bold.json").read_text())
        assert sidecar["RepetitionTime"] == 2.0


def test_events_name_the_audio_and_its_length(ds):
    for s, t, i, r in _runs(ds):
        events = pd.read_csv(ds.files(s, t, r)["events"], sep="\t")
        assert list(events.columns) == ["onset", "duration", "trial_type", "stim_file"]
        assert len(events) == 1
        row = events.iloc[0]
        words = ds.stories[t].run_words(i)
        assert row["onset"] == ds.onset_s == 6.0
        assert row["duration"] == pytest.approx(words[-1].offset_s + 1.0)
        assert row["trial_type"] == "story"
        assert row["stim_file"] == f"{t}_part{r}_audio.wav"


def test_nilearn_finds_one_file_per_subject_and_run(ds):
    from nilearn.interfaces.bids import get_bids_files

    n_runs = len(ds.tasks) * len(ds.runs)
    for hemi in ("L", "R"):
        found = get_bids_files(ds.derivatives, file_tag="bold", file_type="func.gii",
                               filters=[("space", "fsaverage5"), ("hemi", hemi)])
        assert len(found) == N_SUBJECTS * n_runs
        assert all(f"hemi-{hemi}" in f for f in found)
    volumes = get_bids_files(ds.derivatives, file_tag="bold", file_type="nii.gz",
                             filters=[("space", VOLUME_SPACE), ("desc", "preproc")])
    assert len(volumes) == N_SUBJECTS * n_runs
    for subject in ds.subjects:
        mine = get_bids_files(ds.derivatives, file_tag="bold", file_type="func.gii",
                              sub_label=subject, filters=[("hemi", "L"), ("task", "harbour")])
        assert len(mine) == len(ds.runs)


# --------------------------------------------------------------------------- stories

def test_stories_cut_the_bundled_text_at_sentence_ends(ds):
    from brainalign.stimuli.speech import split_transcript

    parts = story_parts(4)
    assert all(part.rstrip("\"'”’)").endswith((".", "!", "?")) for part in parts)
    whole = make_stories(1, 1)["lighthouse"]
    assert [w for p in parts for w in split_transcript(p)] == whole.texts
    sizes = [len(split_transcript(p)) for p in parts]
    assert max(sizes) - min(sizes) < 0.15 * np.mean(sizes)
    for task_index, task in enumerate(ds.tasks):
        story = ds.stories[task]
        assert story.n_runs == 2 and story.tr_s is None and not story.has_scan
        for run in range(2):
            words = story.run_words(run)
            assert [w.text for w in words] == split_transcript(parts[2 * task_index + run])
            assert words[0].onset_s == 1.0
            assert ds.n_volumes[task][run] == \
                math.ceil((ds.onset_s + words[-1].offset_s + 10.0) / ds.tr_s)
        scanned = ds.scanned_story(task)
        assert scanned.has_scan and scanned.first_volume_s == (-6.0, -6.0)
        assert scanned.n_volumes == tuple(ds.n_volumes[task]) and scanned.texts == story.texts


def test_gentle_alignment_reads_back_exactly(ds):
    from brainalign.stimuli.readers import read_gentle

    for t in ds.tasks:
        for i, r in enumerate(ds.runs):
            path = ds.root / "stimuli" / "gentle" / f"{t}_part{r}" / "align.json"
            document = json.loads(path.read_text(encoding="utf-8"))
            assert {e["case"] for e in document["words"]} == {"success"}
            for entry in document["words"][:50]:
                piece = document["transcript"][entry["startOffset"]:entry["endOffset"]]
                assert piece == entry["word"]
            story = read_gentle(path)
            expected = ds.stories[t].run_words(i)
            assert [(w.text, w.onset_s, w.offset_s) for w in story.words] == \
                [(w.text, w.onset_s, w.offset_s) for w in expected]
            assert story.metadata["interpolated_words"] == []


# --------------------------------------------------------------------------- images

def test_volume_counts_agree_everywhere(ds):
    from brainalign.brain.surface import read_gifti_series

    for s, t, i, r in _runs(ds):
        files = ds.files(s, t, r)
        n = ds.n_volumes[t][i]
        for hemi in ("L", "R"):
            assert read_gifti_series(files[f"bold_{hemi}"]).shape == (n, HEMI_VERTICES)
        assert nib.load(files["bold"]).shape == VOLUME_SHAPE + (n,)
        assert len(_confounds(ds, s, t, r)) == n
        assert len(ds.planted_regressor(t, r)) == n


def test_gifti_holds_one_float32_time_point_per_array(ds):
    img = nib.load(ds.files("01", "harbour", "2")["bold_R"])
    assert img.meta["AnatomicalStructurePrimary"] == "CortexRight"
    assert float(img.meta["RepetitionTime"]) == ds.tr_s
    for darray in img.darrays[:3]:
        assert darray.data.dtype == np.float32 and darray.data.shape == (HEMI_VERTICES,)
        assert darray.intent == nib.nifti1.intent_codes["NIFTI_INTENT_TIME_SERIES"]
    values = np.stack([d.data for d in img.darrays])
    assert 500 < np.median(values) < 2000 and np.all(np.isfinite(values))


def test_nifti_headers_and_mask(ds):
    files = ds.files("02", "lighthouse", "1")
    img, mask_img = nib.load(files["bold"]), nib.load(files["mask"])
    affine, brain = volume_grid()
    for image in (img, mask_img):
        assert np.allclose(image.affine, affine)
        assert int(image.header["sform_code"]) == 4 and int(image.header["qform_code"]) == 4
        assert image.header.get_xyzt_units() == ("mm", "sec")
    assert img.header.get_zooms() == pytest.approx((6.0, 6.0, 6.0, ds.tr_s))
    assert img.get_data_dtype() == np.float32
    mask = np.asarray(mask_img.dataobj)
    assert mask.shape == VOLUME_SHAPE and set(np.unique(mask)) == {0, 1}
    assert np.array_equal(mask > 0, brain) and 7000 < brain.sum() < 10000
    data = np.asarray(img.dataobj)
    assert np.all(data[~brain] == 0) and np.all(data[brain] > 0)
    planted = ds.planted[VOLUME_SPACE]
    assert planted.shape == VOLUME_SHAPE and planted.sum() > 300
    assert not np.any(planted & ~brain)


def test_planted_targets_are_the_yeo_somatomotor_network(ds):
    from brainalign.networks import load_atlas

    atlas = load_atlas("yeo7", "fsaverage5")
    network = atlas.labels.index("Somatomotor") + 1
    surface = ds.planted[SURFACE_SPACE]
    assert np.array_equal(np.concatenate([surface["L"], surface["R"]]), atlas.data == network)
    assert surface["L"].shape == surface["R"].shape == (HEMI_VERTICES,)


# --------------------------------------------------------------------------- confounds

def test_confounds_have_fmriprep_columns_and_nilearn_loads_them(ds):
    motion = [f"{m}{suffix}" for m in MOTION_COLUMNS
              for suffix in ("", "_derivative1", "_power2", "_derivative1_power2")]
    for s, t, i, r in _runs(ds):
        files = ds.files(s, t, r)
        table = _confounds(ds, s, t, r)
        n = len(table)
        cosines = [f"cosine{k:02d}" for k in range(int(np.floor(2 * n * ds.tr_s / 128)))]
        assert cosines and set(cosines) <= set(table.columns)
        for name in ["global_signal", "csf", "white_matter"]:
            for suffix in ("", "_derivative1", "_power2", "_derivative1_power2"):
                assert f"{name}{suffix}" in table.columns
        assert {"framewise_displacement", "std_dvars", "dvars", "a_comp_cor_00"} <= \
            set(table.columns) and set(motion) <= set(table.columns)
        first_row = files["confounds"].read_text().splitlines()[1].split("\t")
        header = files["confounds"].read_text().splitlines()[0].split("\t")
        assert first_row[header.index("framewise_displacement")] == "n/a"
        assert first_row[header.index("trans_x_derivative1")] == "n/a"
        assert np.allclose(table[cosines].to_numpy(), cosine_regressors(n, ds.tr_s))
        for path in (files["bold_L"], files["bold"]):
            confounds, _ = _load_confounds(path, strategy=("motion", "high_pass", "wm_csf",
                                                           "scrub"),
                                           scrub=0, fd_threshold=0.5)
            assert set(confounds.columns) == set(motion) | set(cosines) | {"csf",
                                                                            "white_matter"}
            assert len(confounds) == n and not confounds.isna().any().any()


def test_motion_looks_real_and_fd_follows_power(ds):
    for s, t, i, r in _runs(ds):
        table = _confounds(ds, s, t, r)
        head = table[list(MOTION_COLUMNS)].to_numpy()
        fd = table["framewise_displacement"].to_numpy()
        assert np.isnan(fd[0])
        assert np.allclose(fd[1:], framewise_displacement(head)[1:])
        assert 0.05 < np.nanmedian(fd) < 0.25  # a typical, mostly still listener
        assert 1 <= np.sum(fd > 0.5) <= 10  # a few sudden moves per run
        assert np.all(np.ptp(head[:, :3], axis=0) < 4.0)  # mm
        assert np.all(np.abs(head[:, 3:]) < 0.03)  # rad
        assert 0.0005 < np.median(np.std(head[:, 3:], axis=0)) < 0.006
        outlier_columns = [c for c in table.columns if c.startswith("motion_outlier")]
        flagged = (fd > 0.5) | (table["std_dvars"].to_numpy() > 1.5)
        assert len(outlier_columns) == flagged.sum()
        assert np.array_equal(table[outlier_columns].to_numpy().sum(axis=1) > 0, flagged)
        # sudden moves show in the data: DVARS peaks where FD does
        dv = table["std_dvars"].to_numpy()
        assert np.nanmean(dv[fd > 0.5]) > 1.5 > np.nanmedian(dv)
        assert 300 < table["white_matter"].mean() < 1500 and 300 < table["csf"].mean() < 1500


def test_scrub_sample_mask_excludes_the_fd_outliers(ds):
    for s, t, i, r in _runs(ds):
        files = ds.files(s, t, r)
        table = _confounds(ds, s, t, r)
        n = len(table)
        fd = table["framewise_displacement"].to_numpy()
        dv = table["std_dvars"].to_numpy()
        fd_outliers = np.flatnonzero(fd > 0.5)
        # in this dataset DVARS only exceeds 1.5 where FD exceeds 0.5
        assert set(np.flatnonzero(dv > 1.5)) <= set(fd_outliers)
        strategy = ("motion", "high_pass", "wm_csf", "scrub")
        for path in (files["bold_L"], files["bold"]):
            _, exact = _load_confounds(path, strategy=strategy, scrub=0, fd_threshold=0.5)
            assert np.array_equal(np.setdiff1d(np.arange(n), exact), fd_outliers)
            # default scrub=5 also drops kept stretches shorter than 5 volumes
            _, padded = _load_confounds(path, strategy=strategy, fd_threshold=0.5)
            assert np.array_equal(padded, _kept_segments(fd_outliers, n, 5))
            assert set(padded) <= set(exact)


def test_compcor_and_global_signal_strategies_work(ds):
    files = ds.files("01", "lighthouse", "2")
    meta = json.loads(files["confounds_json"].read_text())
    assert [meta[f"a_comp_cor_{k:02d}"]["Mask"] for k in range(11)] == \
        ["combined"] * 5 + ["CSF"] * 3 + ["WM"] * 3
    assert all(meta[name]["Method"] == "aCompCor" for name in meta)
    cosines = [c for c in _confounds(ds, "01", "lighthouse", "2").columns
               if c.startswith("cosine")]
    combined, _ = _load_confounds(files["bold_L"], strategy=("high_pass", "compcor"),
                                  compcor="anat_combined", n_compcor="all")
    assert sorted(combined.columns) == sorted([f"a_comp_cor_{k:02d}" for k in range(5)]
                                              + cosines)
    separated, _ = _load_confounds(files["bold"], strategy=("high_pass", "compcor"),
                                   compcor="anat_separated", n_compcor=2)
    assert sorted(set(separated.columns) - set(cosines)) == \
        ["a_comp_cor_05", "a_comp_cor_06", "a_comp_cor_08", "a_comp_cor_09"]
    gsr, _ = _load_confounds(files["bold"], strategy=("global_signal",), global_signal="full")
    assert len(gsr.columns) == 4


# --------------------------------------------------------------------------- signal

@pytest.fixture(scope="module")
def correlations(ds):
    """Mean partial r with the planted regressor, planted vs other targets, per cleaning."""
    strategies = {"motion": dict(strategy=("motion", "high_pass", "wm_csf", "scrub"),
                                 motion="basic"),
                  "no_motion": dict(strategy=("high_pass", "wm_csf", "scrub"))}
    planted = np.concatenate([ds.planted[SURFACE_SPACE]["L"], ds.planted[SURFACE_SPACE]["R"]])
    out = {name: [] for name in strategies}
    volume = {"planted": [], "other": []}
    for s, t, i, r in _runs(ds):
        files = ds.files(s, t, r)
        bold = _surface(ds, s, t, r)
        regressor = ds.planted_regressor(t, r)
        for name, kwargs in strategies.items():
            confounds, mask = _load_confounds(files["bold_L"], scrub=0, fd_threshold=0.5,
                                              **kwargs)
            keep = np.arange(len(bold)) if mask is None else mask
            rr = _partial_r(bold[keep], regressor[keep], confounds.to_numpy()[keep])
            out[name].append((rr[planted].mean(), rr[~planted].mean(),
                              np.abs(rr[~planted]).mean()))
        confounds, mask = _load_confounds(files["bold"], scrub=0, fd_threshold=0.5,
                                          **strategies["motion"])
        brain = np.asarray(nib.load(files["mask"]).dataobj) > 0
        voxels = np.asarray(nib.load(files["bold"]).dataobj)[brain].T.astype(np.float64)
        rv = _partial_r(voxels[mask], regressor[mask], confounds.to_numpy()[mask])
        in_target = ds.planted[VOLUME_SPACE][brain]
        volume["planted"].append(rv[in_target].mean())
        volume["other"].append(rv[~in_target].mean())
    return ({name: np.mean(values, axis=0) for name, values in out.items()},
            {name: float(np.mean(values)) for name, values in volume.items()})


def test_planted_network_follows_the_story_after_motion_regression(correlations):
    surface, volume = correlations
    planted_r, other_r, _ = surface["motion"]
    assert planted_r > 0.3
    assert abs(other_r) < 0.05
    assert volume["planted"] > 0.3
    assert abs(volume["other"]) < 0.05


def test_regressing_motion_out_matters(correlations):
    surface, _ = correlations
    with_motion, without = surface["motion"], surface["no_motion"]
    assert with_motion[0] > without[0] + 0.02  # the planted response stands out more
    assert with_motion[2] < without[2] - 0.01  # and chance correlations shrink elsewhere


def test_planted_regressor_is_the_hrf_convolved_word_train(ds):
    from nilearn.glm.first_level import compute_regressor

    words = ds.stories["harbour"].run_words(0)
    n = ds.n_volumes["harbour"][0]
    onsets = ds.onset_s + np.array([w.onset_s for w in words])
    raw = compute_regressor(np.vstack([onsets, np.zeros_like(onsets), np.ones_like(onsets)]),
                            "spm", np.arange(n) * ds.tr_s)[0][:, 0]
    regressor = ds.planted_regressor("harbour", "1")
    assert np.allclose(regressor, (raw - raw.mean()) / raw.std())
    assert np.array_equal(regressor, ds.planted_regressor("harbour", 0))
    first_word_volume = int(ds.onset_s // ds.tr_s)
    assert regressor[:first_word_volume + 1].max() < regressor.mean()


# --------------------------------------------------------------------------- determinism

def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_random_state_gives_identical_files(ds, tmp_path):
    again = make_fmriprep_dataset(tmp_path / "again", n_subjects=1, random_state=0)
    assert again.n_volumes == ds.n_volumes and again.tasks == ds.tasks
    ours = sorted(p.relative_to(ds.root) for p in ds.root.rglob("*")
                  if p.is_file() and "sub-02" not in p.parts)
    theirs = sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    assert ours == theirs
    differing = [str(rel) for rel in ours if _digest(ds.root / rel) != _digest(again.root / rel)]
    # only the files that state the number of subjects differ
    assert differing == ["code/synthetic_dataset.json", "participants.tsv"]


def test_other_seed_single_space_and_still_head(ds, tmp_path):
    other = make_fmriprep_dataset(tmp_path / "other", n_subjects=1, spaces=("fsaverage5",),
                                  motion=False, random_state=1)
    files = other.files("01", "lighthouse", "1")
    assert other.spaces == ("fsaverage5",) and VOLUME_SPACE not in other.planted
    assert "bold" not in files and not list(other.derivatives.rglob("*.nii.gz"))
    table = pd.read_csv(files["confounds"], sep="\t")
    assert not np.allclose(table["trans_x"], _confounds(ds, "01", "lighthouse", "1")["trans_x"])
    assert np.nanmax(table["framewise_displacement"]) < 0.5
    _, mask = _load_confounds(files["bold_L"], strategy=("motion", "scrub"), scrub=0,
                              fd_threshold=0.5)
    assert mask is None
    described = json.loads(json.dumps(other.to_dict()))
    assert described["spaces"] == ["fsaverage5"] and described["settings"]["motion"] is False
    assert described["planted_targets"]["fsaverage5"]["L"] == int(other.planted[
        "fsaverage5"]["L"].sum())


def test_to_dict_is_json_ready(ds):
    described = json.loads(json.dumps(ds.to_dict()))
    assert described["subjects"] == ["01", "02"]
    assert described["n_volumes"] == {t: list(v) for t, v in ds.n_volumes.items()}
    assert described["volume_grid"]["res_label"] == "6"
    assert described["planted_targets"][VOLUME_SPACE] == int(ds.planted[VOLUME_SPACE].sum())
    assert described["stories"]["lighthouse"][0]["n_words"] == \
        len(ds.stories["lighthouse"].run_words(0))


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="spaces"):
        make_fmriprep_dataset(tmp_path / "x", spaces=("MNI152NLin6Asym",))
    with pytest.raises(ValueError, match=">= 1"):
        make_fmriprep_dataset(tmp_path / "x", n_subjects=0)
    with pytest.raises(ValueError, match="cannot cut"):
        make_fmriprep_dataset(tmp_path / "x", n_stories=50, runs_per_story=4)
    assert not (tmp_path / "x").exists()
