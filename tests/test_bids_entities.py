"""discover_bids names a run by every entity of its file (acq, ce, rec, dir, run, echo...),
not only subject x session x task x run: two acquisitions or echoes of one run are two runs,
each paired with its own confounds table and TR, and two files of one run are an error."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainalign.brain.bids import BidsError, discover_bids, load_run_confounds

SPACE = "MNI152NLin2009cAsym"
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")


def write_volume_run(func: Path, stem: str, n_volumes: int = 5, tr_s: float | None = None,
                     confounds: float | None = None, extension: str = "nii.gz") -> Path:
    """A preprocessed NIfTI run (stem = the run's entities), its sidecar and confounds."""
    func.mkdir(parents=True, exist_ok=True)
    bold = func / f"{stem}_space-{SPACE}_desc-preproc_bold.{extension}"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, n_volumes), np.float32), np.eye(4)), bold)
    if tr_s is not None:
        (func / f"{stem}_space-{SPACE}_desc-preproc_bold.json").write_text(
            json.dumps({"RepetitionTime": tr_s}))
    if confounds is not None:
        write_confounds(func / f"{stem}_desc-confounds_timeseries.tsv", n_volumes, confounds)
    return bold


def write_confounds(path: Path, n_volumes: int, value: float) -> None:
    """A confounds table whose motion columns hold value, value + 1, ... (one per column)."""
    rows = ["\t".join(MOTION)] + ["\t".join(str(value + i) for i in range(len(MOTION)))
                                  for _ in range(n_volumes)]
    path.write_text("\n".join(rows) + "\n")


def raw_folder(root: Path, subject: str = "01") -> Path:
    func = root / f"sub-{subject}" / "func"
    func.mkdir(parents=True, exist_ok=True)
    return func


def test_two_acquisitions_of_one_run_are_two_runs(tmp_path):
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    raw = raw_folder(tmp_path)
    for acq, tr_s, value in (("lowres", 2.0, 10.0), ("highres", 1.0, 20.0)):
        stem = f"sub-01_task-story_acq-{acq}_run-1"
        (raw / f"{stem}_events.tsv").write_text("onset\tduration\n0\t1\n")
        write_volume_run(deriv, stem, tr_s=tr_s, confounds=value)
    ds = discover_bids(tmp_path, space=SPACE)
    assert [run.label for run in ds.runs] == ["sub-01_task-story_acq-highres_run-1",
                                              "sub-01_task-story_acq-lowres_run-1"]
    assert [Path(run.bold).name.split("_space")[0] for run in ds.runs] == \
        ["sub-01_task-story_acq-highres_run-1", "sub-01_task-story_acq-lowres_run-1"]
    assert [run.tr_s for run in ds.runs] == [1.0, 2.0]
    assert [Path(run.confounds).name for run in ds.runs] == [
        "sub-01_task-story_acq-highres_run-1_desc-confounds_timeseries.tsv",
        "sub-01_task-story_acq-lowres_run-1_desc-confounds_timeseries.tsv"]
    assert [(run.subject, run.task, run.run, run.session) for run in ds.runs] == \
        [("01", "story", "1", None)] * 2
    assert [run.other_entities for run in ds.runs] == ["acq-highres", "acq-lowres"]
    assert ds.missing == []
    # each run's confounds are its own table's values (nilearn finds the same file)
    for run, value in zip(ds.runs, (20.0, 10.0)):
        chosen = load_run_confounds(run, strategy=("motion",), motion="basic",
                                    demean=False)
        assert chosen.file == run.confounds
        assert dict(zip(chosen.columns, chosen.values[-1])) == \
            {name: value + i for i, name in enumerate(MOTION)}
    lines = ds.describe()
    assert "1 subject(s) x 1 task(s), 2 run(s)" in lines
    rows = [line.split() for line in lines if line.startswith("01 ")]
    assert rows == [["01", "story", "1", "1", "5", "-", "yes", "acq-highres"],
                    ["01", "story", "1", "2", "5", "-", "yes", "acq-lowres"]]


def test_entities_choose_one_acquisition_of_each_run(tmp_path):
    """entities={"acq": ...} keeps that acquisition's runs only (with its own TR and
    confounds), does not report the other one's raw files as missing, and refuses a label
    no run has and entities that have options of their own."""
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    raw = raw_folder(tmp_path)
    for acq, tr_s, value in (("lowres", 2.0, 10.0), ("highres", 1.0, 20.0)):
        for run in ("1", "2"):
            stem = f"sub-01_task-story_acq-{acq}_run-{run}"
            (raw / f"{stem}_events.tsv").write_text("onset\tduration\n0\t1\n")
            write_volume_run(deriv, stem, tr_s=tr_s, confounds=value)
    ds = discover_bids(tmp_path, space=SPACE, entities={"acq": "lowres"})
    assert [run.label for run in ds.runs] == ["sub-01_task-story_acq-lowres_run-1",
                                              "sub-01_task-story_acq-lowres_run-2"]
    assert [run.tr_s for run in ds.runs] == [2.0, 2.0] and ds.missing == []
    chosen = load_run_confounds(ds.runs[1], strategy=("motion",), motion="basic", demean=False)
    assert dict(zip(chosen.columns, chosen.values[-1]))["trans_x"] == 10.0
    with pytest.raises(BidsError, match=r"acq- label\(s\) \['midres'\] not found.*'highres', "
                                        r"'lowres'"):
        discover_bids(tmp_path, space=SPACE, entities={"acq": "midres"})
    with pytest.raises(BidsError, match="own options"):
        discover_bids(tmp_path, space=SPACE, entities={"task": "story"})


def test_confounds_are_named_by_every_entity_of_the_run(tmp_path):
    """fMRIPrep's name: sub, ses, task, acq, ce, rec, dir, run, echo, in the bold file's
    order; a table named by sub/ses/task/run only belongs to another run."""
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "ses-2" / "func"
    stem = "sub-01_ses-2_task-story_acq-mb_ce-gad_rec-mag_dir-AP_run-3_echo-2"
    write_volume_run(deriv, stem, n_volumes=4, tr_s=1.5, confounds=7.0)
    other = deriv / "sub-01_ses-2_task-story_run-3_desc-confounds_timeseries.tsv"
    write_confounds(other, 4, 100.0)
    (run,) = discover_bids(tmp_path, space=SPACE).runs
    assert run.label == stem
    assert run.other_entities == "acq-mb_ce-gad_rec-mag_dir-AP_echo-2"
    assert (run.subject, run.session, run.task, run.run) == ("01", "2", "story", "3")
    assert Path(run.confounds).name == f"{stem}_desc-confounds_timeseries.tsv"
    other.unlink()  # nilearn refuses a run with two candidate tables (names both)
    chosen = load_run_confounds(run, ("motion",), motion="basic", demean=False)
    assert chosen.values.shape == (4, len(MOTION))
    assert dict(zip(chosen.columns, chosen.values[0])) == \
        {name: 7.0 + i for i, name in enumerate(MOTION)}


def test_a_run_without_its_own_confounds_table_is_reported(tmp_path):
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    write_volume_run(deriv, "sub-01_task-story_echo-1_run-1", tr_s=2.0)
    write_confounds(deriv / "sub-01_task-story_run-1_desc-confounds_timeseries.tsv", 5, 0.0)
    ds = discover_bids(tmp_path, space=SPACE)
    (run,) = ds.runs
    assert run.confounds is None
    assert ds.missing == [f"{run.bold}: no confounds file beside it (expected "
                          "sub-01_task-story_echo-1_run-1_desc-confounds_timeseries.tsv)"]
    with pytest.raises(BidsError, match="echo-1_run-1_desc-confounds_timeseries.tsv"):
        load_run_confounds(run)


def test_surface_runs_pair_hemispheres_per_acquisition(tmp_path):
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    deriv.mkdir(parents=True)
    n_vertices = {"a": 8, "b": 9}   # one data array per volume; 3 volumes for a, 4 for b
    for acq, n_tr in (("a", 3), ("b", 4)):
        stem = f"sub-01_task-story_acq-{acq}_run-1"
        for hemi in "LR":
            darrays = [nib.gifti.GiftiDataArray(np.zeros(n_vertices[acq], np.float32))
                       for _ in range(n_tr)]
            path = deriv / f"{stem}_hemi-{hemi}_space-fsaverage5_bold.func.gii"
            nib.save(nib.gifti.GiftiImage(darrays=darrays), path)
            path.with_name(path.name.replace(".func.gii", ".json")).write_text(
                json.dumps({"RepetitionTime": 2.0}))
        write_confounds(deriv / f"{stem}_desc-confounds_timeseries.tsv", n_tr, 0.0)
    lone = deriv / "sub-01_task-story_acq-c_run-1_hemi-L_space-fsaverage5_bold.func.gii"
    nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(np.zeros(8, np.float32))]),
             lone)
    ds = discover_bids(tmp_path, space="fsaverage5")
    assert [run.label for run in ds.runs] == ["sub-01_task-story_acq-a_run-1",
                                              "sub-01_task-story_acq-b_run-1"]
    for run, acq in zip(ds.runs, "ab"):
        assert {h: Path(p).name for h, p in run.bold.items()} == {
            h: f"sub-01_task-story_acq-{acq}_run-1_hemi-{h}_space-fsaverage5_bold.func.gii"
            for h in "LR"}
        assert Path(run.confounds).name == \
            f"sub-01_task-story_acq-{acq}_run-1_desc-confounds_timeseries.tsv"
    assert [run.n_volumes() for run in ds.runs] == [3, 4]
    assert ds.missing == [f"{lone}: no hemi-R file beside it (space fsaverage5)"]


def test_two_files_of_one_run_are_an_error_that_names_both(tmp_path):
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    gz = write_volume_run(deriv, "sub-01_task-story_acq-x_run-1", tr_s=2.0, confounds=0.0)
    plain = write_volume_run(deriv, "sub-01_task-story_acq-x_run-1", tr_s=2.0,
                             extension="nii")
    with pytest.raises(BidsError) as err:
        discover_bids(tmp_path, space=SPACE)
    message = str(err.value)
    assert str(gz) in message and str(plain) in message
    assert "sub-01_task-story_acq-x_run-1" in message
    # a cohort qualifies the space, not the run
    pediatric = tmp_path / "pediatric" / "sub-01" / "func"
    pediatric.mkdir(parents=True)
    image = nib.Nifti1Image(np.zeros((2, 2, 2, 5), np.float32), np.eye(4))
    cohorts = [pediatric / f"sub-01_task-story_run-1_space-MNIPediatricAsym_cohort-{c}"
                           "_desc-preproc_bold.nii.gz" for c in (1, 2)]
    for path in cohorts:
        nib.save(image, path)
    with pytest.raises(BidsError) as err:
        discover_bids(tmp_path, derivatives="pediatric", space="MNIPediatricAsym")
    assert all(str(path) in str(err.value) for path in cohorts)
    assert "run sub-01_task-story_run-1 in space MNIPediatricAsym" in str(err.value)


def test_a_raw_acquisition_without_derivatives_is_missing(tmp_path):
    """The raw highres bold has no preprocessed file: listed; the events file without acq-
    applies to the lowres run (BIDS inheritance): not listed."""
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    raw = raw_folder(tmp_path)
    write_volume_run(deriv, "sub-01_task-story_acq-lowres_run-1", tr_s=2.0, confounds=0.0)
    (raw / "sub-01_task-story_run-1_events.tsv").write_text("onset\tduration\n0\t1\n")
    image = nib.Nifti1Image(np.zeros((2, 2, 2, 5), np.float32), np.eye(4))
    for acq in ("lowres", "highres"):
        nib.save(image, raw / f"sub-01_task-story_acq-{acq}_run-1_bold.nii.gz")
    ds = discover_bids(tmp_path, space=SPACE)
    assert [run.label for run in ds.runs] == ["sub-01_task-story_acq-lowres_run-1"]
    assert ds.missing == [f"sub-01_task-story_acq-highres_run-1: in the raw dataset but no "
                          f"preprocessed bold in space {SPACE} under "
                          f"{tmp_path / 'derivatives' / 'fmriprep'}"]


def test_raw_sidecars_give_each_acquisition_its_tr(tmp_path):
    """Without derivative sidecars: the run's own raw sidecar, then the top-level sidecar of
    its acquisition, before the task's."""
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    raw = raw_folder(tmp_path)
    for acq in ("fast", "slow", "plain"):
        write_volume_run(deriv, f"sub-01_task-story_acq-{acq}_run-1", confounds=0.0)
    (raw / "sub-01_task-story_acq-slow_run-1_bold.json").write_text(
        json.dumps({"RepetitionTime": 2.5}))
    (tmp_path / "task-story_acq-fast_run-1_bold.json").write_text(
        json.dumps({"RepetitionTime": 0.8}))
    (tmp_path / "task-story_bold.json").write_text(json.dumps({"RepetitionTime": 3.0}))
    runs = {run.other_entities: run for run in discover_bids(tmp_path, space=SPACE).runs}
    assert {k: run.tr_s for k, run in runs.items()} == \
        {"acq-fast": 0.8, "acq-slow": 2.5, "acq-plain": 3.0}
    assert Path(runs["acq-slow"].tr_source) == raw / "sub-01_task-story_acq-slow_run-1_bold.json"
    assert Path(runs["acq-fast"].tr_source) == tmp_path / "task-story_acq-fast_run-1_bold.json"
    assert Path(runs["acq-plain"].tr_source) == tmp_path / "task-story_bold.json"


def test_an_acquisition_beside_the_plain_run_gets_its_own_confounds(tmp_path):
    """nilearn's lookup matches confounds tables by subject, task and run alone, so a folder
    holding a plain run and an acq- run of it made it refuse both; each now gets its own."""
    deriv = tmp_path / "derivatives" / "fmriprep" / "sub-01" / "func"
    raw = raw_folder(tmp_path)
    for stem, value in (("sub-01_task-story_run-1", 10.0),
                        ("sub-01_task-story_acq-b_run-1", 20.0)):
        (raw / f"{stem}_events.tsv").write_text("onset\tduration\n0\t1\n")
        write_volume_run(deriv, stem, tr_s=2.0, confounds=value)
    ds = discover_bids(tmp_path, space=SPACE)
    assert [run.other_entities for run in ds.runs] == ["acq-b", ""]
    for run, value in zip(ds.runs, (20.0, 10.0)):
        chosen = load_run_confounds(run, strategy=("motion",), motion="basic", demean=False)
        assert chosen.file == run.confounds
        assert dict(zip(chosen.columns, chosen.values[-1])) == \
            {name: value + i for i, name in enumerate(MOTION)}
