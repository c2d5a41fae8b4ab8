"""A BIDS / fMRIPrep study end to end on the synthetic dataset, and every error a user can
cause with one: a run without its story, a story without timing, a missing confounds file, a
space not in the derivatives, volumes that do not match the story."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from brainalign.cli import main
from brainalign.encoding import load
from brainalign.pipeline.bids_design import bids_design
from brainalign.pipeline.config import ConfigError, validate
from brainalign.pipeline.study import run_study
from brainalign.simulate.bids import make_fmriprep_dataset
from test_pipeline_study import save_tiny_llama

SPACE = "MNI152NLin2009cAsym"


def bids_config(dataset, out, model_dir="unused", **changes) -> dict:
    raw = {
        "study": {"out": str(out)},
        "model": {"names": [str(model_dir)], "sites": ["mlp.out"], "context_tokens": 32,
                  "device": "cpu"},
        "stories": {"bundled": False, "tr_s": dataset.tr_s},
        "fmri": {"source": "bids", "bids": str(dataset.root), "bids_space": SPACE,
                 "bids_res": "6", "timing_layout": "narratives"},
        "confounds": {"strategy": ["motion", "high_pass", "wm_csf", "scrub"], "scrub": 0},
        "patterns": {"n_atoms": 4},
        "encoding": {"bands": ["atoms", "word_rate"], "n_permutations": 100,
                     "n_band_shifts": 0},
        "networks": {"atlas": "dosenbach", "n_null": 50, "n_shifts": 0},
        "group": {"n_perm": 100},
        "outputs": {"report": False},
    }
    for key, value in changes.items():
        table, name = key.split("__")
        raw.setdefault(table, {})[name] = value
    return validate(raw)


def fd_outliers(confounds_tsv, threshold=0.5) -> int:
    fd = pd.read_csv(confounds_tsv, sep="\t", na_values="n/a")["framewise_displacement"]
    return int((fd.fillna(0) > threshold).sum())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_fmriprep_dataset(tmp_path_factory.mktemp("bids") / "ds", n_subjects=3,
                                 spaces=(SPACE,), snr=1.0, random_state=0)


@pytest.fixture(scope="module")
def study(dataset, tmp_path_factory):
    """The study on the planted voxels and as many others (a mask keeps the test fast)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bids-study")
    planted = dataset.planted[SPACE]
    brain = nib.load(dataset.files("01", dataset.tasks[0], dataset.runs[0])["mask"])
    inside = np.asarray(brain.dataobj) > 0
    others = np.argwhere(inside & ~planted)
    pick = others[np.random.default_rng(0).choice(len(others), int(planted.sum()), False)]
    mask = planted.copy()
    mask[tuple(pick.T)] = True
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), brain.affine), root / "mask.nii.gz")
    config = bids_config(dataset, root / "out", save_tiny_llama(root / "tiny-llama"),
                         fmri__mask=str(root / "mask.nii.gz"))
    return config, run_study(config, progress=False), planted[mask]


def test_design_pairs_every_run_with_its_story_and_onset(study, dataset):
    config, summary, _ = study
    described = json.loads(next(Path(summary.out).glob("cache/fmri-*/*/data/brain.json"))
                           .read_text())
    design = described["design"]
    assert design["subjects"] == ["01", "02", "03"]
    assert [(r["story"], r["story_run"], r["task"], r["run"]) for r in design["runs"]] == [
        ("harbour", 0, "harbour", "1"), ("harbour", 1, "harbour", "2"),
        ("lighthouse", 0, "lighthouse", "1"), ("lighthouse", 1, "lighthouse", "2")]
    assert [r["n_volumes"] for r in design["runs"]] == (dataset.n_volumes["harbour"]
                                                       + dataset.n_volumes["lighthouse"])
    assert all(r["first_volume_s"] == -dataset.onset_s for r in design["runs"])
    assert summary.sizes["n_subjects"] == 3 and summary.sizes["stories"] == ["harbour",
                                                                            "lighthouse"]
    # confounds: the strategy's columns, and exactly the FD > 0.5 mm volumes scrubbed
    for subject, chosen in described["confounds"]["subjects"].items():
        assert {"trans_x", "rot_z_derivative1_power2", "white_matter", "csf",
                "cosine00"} <= set(chosen["confound_columns"])
        expected = sum(fd_outliers(path) for path in chosen["confound_files"])
        assert chosen["scrubbed_volumes"] == expected > 0


def test_encoding_leaves_one_story_out_and_scrubs(study, dataset):
    config, summary, _ = study
    results = sorted(Path(summary.out).glob("cache/encoding-*/*/data/sub-*"))
    assert [p.name for p in results] == ["sub-01", "sub-02", "sub-03"]
    described = json.loads(next(Path(summary.out).glob("cache/fmri-*/*/data/brain.json"))
                           .read_text())
    for path in results:
        result = load(path)
        assert result.cv["outer"] == "leave-one-group-out"
        assert result.cv["outer_test_groups"] == [[0], [1]]
        scrubbed = result.cv["scrubbed_volumes"]
        assert len(scrubbed) == described["confounds"]["subjects"][path.name[4:]][
            "scrubbed_volumes"]
        assert np.isnan(result.predictions[scrubbed]).all()
        assert result.cv["cleaning"]["confounds"] >= 24


def test_planted_signal_is_recovered(study):
    """Held-out r in the planted voxels >= 0.3, and <= 6 % of the other voxels significant
    (FDR q = 0.05 per subject)."""
    config, summary, planted = study
    for path in sorted(Path(summary.out).glob("cache/encoding-*/*/data/sub-*")):
        result = load(path)
        assert np.nanmean(result.r[planted]) >= 0.3
        significant = result.p_fdr < 0.05
        assert significant[~planted].mean() <= 0.06
        assert significant[planted].mean() >= 0.5


def test_outputs_one_map_set_per_subject_and_group_maps(study):
    config, summary, planted = study
    maps = summary.maps["tiny-llama/data"]
    for subject in ("01", "02", "03"):
        path = Path(maps[f"r_sub-{subject}"])
        assert path.name.startswith(f"sub-{subject}_") and path.name.endswith(".nii.gz")
        sidecar = json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())
        assert sidecar["subject"] == subject and sidecar["n_subjects"] == 1
        assert sidecar["confounds"]["strategy"] == ["motion", "high_pass", "wm_csf", "scrub"]
        assert sidecar["cv"] == "leave-one-story-out" and sidecar["timing_layout"] == "narratives"
        image = nib.load(path)
        assert image.header.get_sform(coded=True)[1] == 4
    assert "group_r" in maps or any(key.startswith("group") for key in maps)
    assert summary.group["tiny-llama/data"]["r"]["n_subjects"] == 3
    assert any(note.startswith("BIDS (narratives timing") for note in summary.notes)
    assert any("volumes scrubbed" in note for note in summary.notes)


# --------------------------------------------------------------------------- errors

@pytest.fixture()
def linked(dataset, tmp_path):
    """A copy of the dataset made of symbolic links: a test may remove or replace files."""
    root = tmp_path / "ds"
    shutil.copytree(dataset.root, root, copy_function=os.symlink)
    return root


def design_error(dataset, root, **changes) -> str:
    config = bids_config(dataset, root.parent / "out", **changes)
    config["fmri"]["bids"] = str(root)
    with pytest.raises(ConfigError) as caught:
        bids_design(config)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_run_without_its_story(dataset, linked):
    events = dataset.files("02", "harbour", "2")["events"]
    (linked / events.relative_to(dataset.root)).unlink()
    message = design_error(dataset, linked)
    assert "a run without its story" in message
    assert "sub-02_task-harbour_run-2_space-MNI152NLin2009cAsym_res-6_desc-preproc_bold" in message


def test_a_story_without_timing(dataset, linked):
    gentle = dataset.files("01", "lighthouse", "1")["gentle"]
    (linked / gentle.relative_to(dataset.root)).unlink()
    message = design_error(dataset, linked)
    assert str(linked / gentle.relative_to(dataset.root)) in message


def test_a_missing_confounds_file(dataset, linked):
    confounds = dataset.files("03", "harbour", "1")["confounds"]
    (linked / confounds.relative_to(dataset.root)).unlink()
    message = design_error(dataset, linked)
    assert "no confounds file" in message and "sub-03_task-harbour_run-1" in message
    # without a strategy the table is not needed
    config = bids_config(dataset, linked.parent / "out", confounds__strategy=[])
    config["fmri"]["bids"] = str(linked)
    assert bids_design(config).subjects == ["01", "02", "03"]


def test_a_space_not_in_the_derivatives(dataset, linked):
    message = design_error(dataset, linked, fmri__bids_space="fsaverage6")
    assert "fsaverage6" in message and "MNI152NLin2009cAsym" in message
    assert str(linked / "derivatives" / "fmriprep") in message


def test_volumes_that_do_not_match_the_story(dataset, linked):
    bold = dataset.files("02", "lighthouse", "2")["bold"]
    target = linked / bold.relative_to(dataset.root)
    image = nib.load(bold)
    target.unlink()
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[..., :-3], image.affine, image.header),
             target)
    message = design_error(dataset, linked)
    assert str(target) in message and "volumes" in message
    n = dataset.n_volumes["lighthouse"][1]
    assert f"{n - 3} volumes" in message and f"with {n}" in message


def test_config_errors_of_a_bids_study(dataset):
    with pytest.raises(ConfigError, match="stories.bundled = false"):
        validate({"fmri": {"source": "bids", "bids": "x"}})
    with pytest.raises(ConfigError, match='needs fmri.bids = "PATH"'):
        validate({"fmri": {"source": "bids"}, "stories": {"bundled": False}})
    with pytest.raises(ConfigError, match="not used by the narratives layout"):
        bids_design(bids_config(dataset, "out", fmri__stimulus_onset_s=[6.0]))
    with pytest.raises(ConfigError, match="confounds.strategy contains"):
        bids_config(dataset, "out", confounds__strategy=["motion", "wiggle"])
    for bad in (["task-harbour"], ["acq"], ["acq-l_o"]):
        with pytest.raises(ConfigError, match="fmri.bids_entities contains"):
            bids_config(dataset, "out", fmri__bids_entities=bad)
    # a valid entity is passed on to the discovery: a label no run has is an error naming it
    with pytest.raises(ConfigError, match=r"acq- label\(s\) \['lo'\] not found"):
        bids_design(bids_config(dataset, "out", fmri__bids_entities=["acq-lo"]))


def test_bids_info_command(dataset):
    runner = CliRunner()
    result = runner.invoke(main, ["bids", "info", str(dataset.root), "--space", SPACE,
                                  "--timing", "narratives"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "3 subject(s) x 2 task(s), 12 run(s)" in lines
    assert sum(line.startswith("sub-") and line.endswith("ok") for line in lines) == 12
    assert "missing: nothing" in lines
    n = dataset.n_volumes["harbour"][0]
    assert any(line.split()[:6] == ["01", "harbour", "1", "2", str(n), "-"] for line in lines)
    bad = runner.invoke(main, ["bids", "info", str(dataset.root), "--space", "fsaverage6"])
    assert bad.exit_code == 1
    assert bad.output.count("\n") == 1 and "spaces found" in bad.output


def test_the_readme_study_file_reads_a_dataset(dataset, tmp_path):
    """The README's "Your own data" TOML is a valid study file; pointed at the synthetic
    dataset (its TR, its volume space) it pairs every run with its story."""
    from brainalign.pipeline.config import load_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    toml = readme.split("write `study.toml`")[1].split("```toml")[1].split("```")[0]
    assert len(toml.strip().splitlines()) <= 15
    toml = (toml.replace('"/data/mystudy"', f'"{dataset.root}"')
            .replace("tr_s = 1.5", f"tr_s = {dataset.tr_s}")
            .replace('bids_space = "fsaverage5"', f'bids_space = "{SPACE}"\nbids_res = "6"'))
    (tmp_path / "study.toml").write_text(toml)
    config = load_config(tmp_path / "study.toml")
    assert config["fmri"]["source"] == "bids"
    design = bids_design(config)
    assert design.subjects == ["01", "02", "03"]
    assert [s.name for s in design.stories] == ["harbour", "lighthouse"]
    assert design.story_of_run == [0, 0, 1, 1]


# --------------------------------------------------------------------------- volume times

def _set_start_time(dataset, root, start_time_s, subjects=("01", "02", "03")):
    """Write StartTime into the derivative sidecar of every run of ``subjects`` (a copy made
    of links: the link is replaced by a file)."""
    for subject in subjects:
        for task in dataset.tasks:
            for run in dataset.runs:
                bold = dataset.files(subject, task, run)["bold"]
                sidecar = root / bold.relative_to(dataset.root)
                sidecar = sidecar.with_name(sidecar.name.replace(".nii.gz", ".json"))
                document = json.loads(sidecar.read_text())
                sidecar.unlink()
                sidecar.write_text(json.dumps({**document, "StartTime": start_time_s}))


def _design(dataset, root, **changes):
    config = bids_config(dataset, root.parent / "out", **changes)
    config["fmri"]["bids"] = str(root)
    return bids_design(config)


def test_start_time_of_the_sidecars_times_every_volume(dataset, linked, caplog):
    """fMRIPrep's StartTime (slice-timing reference) moves each volume's time on the words'
    clock by that much: first_volume_s = -onset + StartTime, stated in the design."""
    _set_start_time(dataset, linked, 0.75 * dataset.tr_s)
    with caplog.at_level("WARNING", logger="brainalign.pipeline.bids_design"):
        design = _design(dataset, linked)
    assert "StartTime" not in caplog.text
    for story in design.stories:
        np.testing.assert_allclose(story.first_volume_s,
                                   -dataset.onset_s + 0.75 * dataset.tr_s, atol=1e-9)
    runs = design.describe()["runs"]
    assert [r["volume_time_s"] for r in runs] == [0.75 * dataset.tr_s] * len(runs)
    assert all("StartTime" in r["volume_time_source"] for r in runs)
    # a key that agrees with the sidecars is accepted; one that does not is an error
    assert _design(dataset, linked, fmri__bids_slice_time_ref=[0.75]).stories[0] \
        .first_volume_s == design.stories[0].first_volume_s
    message = design_error(dataset, linked, fmri__bids_slice_time_ref=[0.5])
    assert "StartTime" in message and "bids_slice_time_ref = 0.5" in message


def test_without_start_time_the_volume_time_is_stated_or_warned(dataset, linked, caplog):
    """No StartTime: fmri.bids_slice_time_ref sets the volume time (fraction of the TR);
    unset, volumes are taken at acquisition start and a warning says how to set it."""
    with caplog.at_level("WARNING", logger="brainalign.pipeline.bids_design"):
        design = _design(dataset, linked)
    assert "no StartTime" in caplog.text and "bids_slice_time_ref = [0.5]" in caplog.text
    assert all(s == -dataset.onset_s for story in design.stories for s in story.first_volume_s)
    assert design.describe()["runs"][0]["volume_time_s"] == 0.0
    caplog.clear()
    with caplog.at_level("WARNING", logger="brainalign.pipeline.bids_design"):
        design = _design(dataset, linked, fmri__bids_slice_time_ref=[0.5])
    assert "no StartTime" not in caplog.text
    np.testing.assert_allclose(design.stories[0].first_volume_s,
                               -dataset.onset_s + 0.5 * dataset.tr_s, atol=1e-9)
    assert design.describe()["runs"][0]["volume_time_source"] == "fmri.bids_slice_time_ref"
    with pytest.raises(ConfigError, match="bids_slice_time_ref"):
        bids_config(dataset, "out", fmri__bids_slice_time_ref=[1.5])


def test_start_times_that_differ_between_subjects_or_exceed_the_tr(dataset, linked):
    _set_start_time(dataset, linked, 0.5 * dataset.tr_s, subjects=("01", "03"))
    _set_start_time(dataset, linked, 0.25 * dataset.tr_s, subjects=("02",))
    message = design_error(dataset, linked)
    assert "sub-02_task-harbour_run-1" in message and "same timing for every subject" in message
    _set_start_time(dataset, linked, dataset.tr_s, subjects=("02",))
    message = design_error(dataset, linked)
    assert "StartTime" in message and "sub-02_task-harbour_run-1" in message


def test_bids_info_names_each_way_words_miss_the_scan():
    """Words before the first volume were reported as "words end at ..." with an end that
    was inside the scan."""
    from brainalign.cli.bids import timing_check
    from brainalign.stimuli import Word

    words = [Word("a", 1.0, 1.5, 0), Word("b", 10.0, 10.5, 0)]
    assert timing_check(words, 0.0, 10, 2.0) == "ok"
    assert timing_check(words, -3.0, 10, 2.0) == (
        "MISMATCH: words start at -2.0 s, before the first volume")
    assert timing_check(words, 12.0, 10, 2.0) == (
        "MISMATCH: words end at 22.5 s, 10 volumes end at 20.0 s")
    assert timing_check(words, -3.0, 3, 2.0) == (
        "MISMATCH: words start at -2.0 s, before the first volume; words end at 7.5 s, "
        "3 volumes end at 6.0 s")
    assert timing_check([], 0.0, 10, 2.0) == "MISMATCH: no words in this story run"
