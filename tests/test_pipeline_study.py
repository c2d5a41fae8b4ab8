"""The whole study pipeline on a tiny model and a simulated ROI space: outputs, cache, report."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from brainalign.pipeline.config import validate
from brainalign.pipeline.study import read_log, run_study
from brainalign.record import Recording
from brainalign.stimuli import bundled_story
from conftest import REPO, tiny_config
from test_report import assert_figures_render, render_in_chromium

CACHED_STAGES = ("record", "timecourse", "patterns", "fmri", "encoding", "networks",
                 "interventions", "group")


def save_tiny_llama(folder):
    """A 3-layer random Llama and a BPE tokenizer trained on the bundled story, saved."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator([" ".join(bundled_story().texts)],
                                trainers.BpeTrainer(vocab_size=120, special_tokens=[
                                    "[UNK]", "[PAD]", "<s>"], show_progress=False))
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                        pad_token="[PAD]", bos_token="<s>")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("llama")).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_study(model_dir, out, **changes) -> dict:
    raw = {
        "study": {"name": "tiny", "out": str(out), "seed": 0},
        "model": {"names": [str(model_dir)], "sites": ["mlp.out"], "context_tokens": 32,
                  "device": "cpu"},
        "fmri": {"spaces": ["roi"], "n_subjects": 2, "n_planted": 3, "snr": 4.0,
                 "noise": "white"},
        "patterns": {"n_atoms": 6},
        "encoding": {"delays": [1, 2, 3], "n_permutations": 10},
        "networks": {"atlas": "dosenbach", "n_null": 500},
        "interventions": {"study_b": True, "n_components": 4, "z_threshold": 2.5,
                          "n_controls": 2},
        "outputs": {"report": True, "maps": True},
    }
    for key, value in changes.items():
        table, name = key.split("__")
        raw.setdefault(table, {})[name] = value
    return validate(raw)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("study")
    model_dir = save_tiny_llama(root / "tiny-llama")
    config = tiny_study(model_dir, root / "out")
    return config, run_study(config, progress=False)


def test_first_run_computes_every_stage_and_writes_outputs(first_run):
    config, summary = first_run
    status = summary.stage_status()
    assert [status[s] for s in CACHED_STAGES] == ["computed"] * len(CACHED_STAGES)
    out = summary.out
    document = json.loads((Path(out) / "summary.json").read_text())
    for key in ("wall_s", "recovery", "maps", "stages", "sizes", "provenance"):
        assert key in document
    accuracy = document["recovery"]["accuracy"]
    assert isinstance(accuracy, float) and 0.0 <= accuracy <= 1.0
    per_space = document["recovery"]["tiny-llama/roi"]
    # the study's 6 atoms are planted, 3 of them in Dosenbach networks (the ROI space)
    assert len(per_space["planted_network"]) == 6
    assert sum(name != "none" for name in per_space["planted_network"]) == 3
    assert per_space["atom_correlation_mean"] > 0.99  # planted atoms are z-scored per run
    assert per_space["accuracy"] >= 2 / 3, "high-SNR ROI study should find the planted networks"
    assert 0.5 < per_space["auc"] <= 1.0, "planted ROIs should rank above the rest"
    assert document["sizes"]["n_neurons"] == 3 * 32 and document["sizes"]["n_tr"] == 279
    assert document["sizes"]["spaces"] == {"roi": 160}
    # each band's own delays: the word rate is already convolved with the HRF
    delays = {"atoms": [1, 2, 3], "word_rate": []}
    assert config["encoding"]["bands"] == ["atoms", "word_rate"]
    assert document["sizes"]["delays_tr"] == delays
    for path in document["maps"]["tiny-llama/roi"].values():
        assert path.endswith(".tsv") and open(path).readline().startswith(("roi", "map"))
        sidecar = json.load(open(path[:-4] + ".json"))
        assert sidecar["versions"] and sidecar["delays_tr"] == delays
        assert sidecar["timecourse"]["method"] == config["timecourse"]["method"]
    lines = read_log(out)
    stage_lines = [line for line in lines if line.get("event") == "stage"]
    assert [line["stage"] for line in stage_lines if line["status"] != "skipped"] == \
        list(CACHED_STAGES)
    # atoms fitted on the story: no reference corpus is recorded
    assert [line["stage"] for line in stage_lines if line["status"] == "skipped"] == ["corpus"]


def test_bands_are_partitioned_and_atoms_fitted_per_fold(first_run):
    """The default study fits atoms + word rate with banded ridge, the atoms per outer fold,
    and reports each band's unique r and the whole-story comparison."""
    from brainalign.encoding import load

    config, summary = first_run
    encoding_dir = Path(next(run.path for run in summary.stages if run.stage == "encoding"))
    results = [load(p) for p in sorted((encoding_dir / "tiny-llama" / "roi").glob("sub-*"))]
    whole = [load(p) for p in sorted((encoding_dir / "tiny-llama" / "roi"
                                      / "whole-story-atoms").glob("sub-*"))]
    assert len(results) == len(whole) == 2
    for result in results:
        assert [b["name"] for b in result.bands] == ["atoms", "word_rate"]
        assert result.bands[0]["delays"] == [1, 2, 3] and result.bands[1]["delays"] == []
        assert result.cv["bands"][0]["fold_features"]["n_folds"] == 2
        assert result.cv["cleaning"]["high_pass_hz"] == pytest.approx(1 / 128)
        p_unique = result.partition["p_unique"]
        assert p_unique.shape == (2, 160) and np.isfinite(p_unique).all()
    entry = summary.encoding["tiny-llama/roi"]
    assert set(entry["bands"]) == {"atoms", "word_rate"}
    # the simulation plants the atoms, not the word rate
    assert entry["bands"]["atoms"]["r_unique_mean"] > entry["bands"]["word_rate"]["r_unique_mean"]
    assert np.isfinite(entry["atoms"]["whole_story_r_mean"])
    assert "unique_r_atoms" in summary.maps["tiny-llama/roi"]
    assert any(label.startswith("encoding tiny-llama/roi") for label, _ in summary.rows())


def test_exported_r_map_matches_the_encoding_results(first_run):
    from brainalign.encoding import load
    from brainalign.export import load_map
    from brainalign.pipeline.spaces import space_masker

    config, summary = first_run
    encoding_dir = next(run.path for run in summary.stages if run.stage == "encoding")
    results = [load(p) for p in sorted((Path(encoding_dir)
                                        / "tiny-llama" / "roi").glob("sub-*"))]
    assert len(results) == 2
    expected = np.nan_to_num(np.nanmean([np.where(r.valid_targets, r.r, np.nan)
                                         for r in results], axis=0))
    masker = space_masker("roi", 160, [f"roi{i:03d}" for i in range(160)])
    written = load_map(summary.maps["tiny-llama/roi"]["r"], masker)
    np.testing.assert_allclose(written, expected, atol=1e-6)


def test_second_run_loads_every_stage_from_the_cache(first_run):
    config, first = first_run
    again = run_study(copy.deepcopy(config), progress=False)
    status = again.stage_status()
    assert [status[s] for s in CACHED_STAGES] == ["cached"] * len(CACHED_STAGES)
    lines = read_log(first.out)
    starts = [line["stage"] for line in lines if line.get("event") == "stage_start"]
    assert starts == list(CACHED_STAGES), "the second run started a stage again"
    assert again.recovery["accuracy"] == first.recovery["accuracy"]


def test_new_atom_count_reuses_recordings_and_recomputes_patterns_onward(first_run):
    config, first = first_run
    changed = copy.deepcopy(config)
    changed["patterns"]["n_atoms"] = 4
    summary = run_study(changed, progress=False)
    status = summary.stage_status()
    assert [status[s] for s in ("record", "timecourse")] == ["cached"] * 2
    # the simulation plants the study's own subgroups, so it follows the atoms
    assert [status[s] for s in ("patterns", "fmri", "encoding", "networks")] == ["computed"] * 4
    assert status["interventions"] == "cached", "the lesion check does not depend on K"
    paths = {run.stage: run.path for run in summary.stages}
    first_paths = {run.stage: run.path for run in first.stages}
    assert paths["record"] == first_paths["record"]
    assert paths["patterns"] != first_paths["patterns"]
    maps = np.load(Path(paths["networks"]) / "tiny-llama" / "roi"
                   / "pattern_maps.npy")
    assert maps.shape == (4, 160)


def test_lesion_check_scores_the_unhooked_model_and_the_lesion(first_run):
    from brainalign.interventions import score_text
    from brainalign.models.registry import load_model
    from brainalign.pipeline.lesion_check import heldout_text

    config, summary = first_run
    result = summary.study_b
    assert result["n_neurons"] == 96 and result["n_words_fit"] == len(bundled_story().run_words(0))
    assert result["story"] == bundled_story().name and result["heldout_runs"] == [1]
    assert 0 < result["union_size"] <= sum(result["network_sizes"])
    loaded = load_model(config["model"]["names"][0])
    with torch.no_grad():
        reference = score_text(loaded.model, loaded.tokenizer, heldout_text(bundled_story()),
                               max_tokens=512).to_dict()
    assert result["baseline"]["perplexity"] == pytest.approx(reference["perplexity"], rel=1e-5)
    assert result["lesion"]["perplexity"] != pytest.approx(reference["perplexity"], rel=1e-6)
    assert len(result["controls"]) == 2
    assert sum(result["union_layers"].values()) == result["union_size"]
    borrowed = [control["from_other_layers"] for control in result["controls"]]
    assert all(isinstance(n, int) and 0 <= n <= result["union_size"] for n in borrowed)
    assert result["controls_from_other_layers"] == max(borrowed)


def test_report_renders_in_chromium(first_run, tmp_path):
    """The page that brainalign.pipeline.study_report.write_report wrote for the study.

    Rerun (every stage from the cache) so that the page is this config's: another test's
    run with K = 4 writes its report to the same output folder.
    """
    config, _ = first_run
    summary = run_study(config, progress=False)
    assert "computed" not in summary.stage_status().values()
    page = Path(summary.report)
    text = page.read_text()
    for title in ("Stimulus and model", "Atom time courses", "Subgroups x layers",
                  "Encoding score maps", "Atom maps and network assignment",
                  "Patterns x networks", "Recovery of the planted truth", "Study B: lesion check",
                  "Provenance"):
        assert f"<h2>{title}</h2>" in text, title
    assert "against 1000 circular shifts of the pattern" in text   # the temporal test's panel
    assert "against maps of the patterns reversed in time and circularly shifted" in text
    assert "a difference of two correlations" in text               # unique r is explained
    assert "all 6 atoms (dictionary)" in text
    assert "dashed lines where one run ends and the next begins (2 runs)" in text
    assert "control neurons from other layers" in text
    rows = assert_figures_render(page, tmp_path)
    assert any(row["alt"].startswith("roi: the 6 atoms' maps") for row in rows)
    pixels, console = render_in_chromium(page, tmp_path)
    assert console == []
    gray = pixels[..., :3].mean(axis=2)
    assert gray.std() > 0.05, "screenshot is blank"
    assert (gray < 0.5).mean() > 0.001, "no dark pixels: text and figures did not render"


@pytest.mark.slow
def test_demo_command_writes_maps_report_and_summary(tmp_path):
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-c", "from brainalign.cli import main; main()",
                          "demo", "--out", str(out), "--no-progress"], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["recovery"]["accuracy"] <= 1.0
    assert summary["wall_s"] > 0
    files = [path for entry in summary["maps"].values() for path in entry.values()]
    assert any(path.endswith(".func.gii") for path in files)
    assert any(path.endswith(".nii.gz") for path in files)
    for path in files:
        assert Path(path).exists(), path
    assert (out / "report.html").stat().st_size > 10_000
    assert "recovery" in run.stdout and "wall time" in run.stdout


def test_real_roi_tables_run_through_the_same_study(first_run, tmp_path):
    """ROI tables on disk (here the simulated subjects' BOLD) replace the simulation: the
    encoding fits the same data, so its held-out r equals the simulated run's."""
    from brainalign.encoding import load, pattern_maps
    from brainalign.pipeline.study import Study
    from brainalign.simulate import Simulation

    config, first = first_run
    paths = {run.stage: Path(run.path) for run in first.stages}
    simulation = Simulation.load(paths["fmri"] / "tiny-llama" / "roi")
    tables = []
    # a third subject: the first one's data without ROI 5 (a target that subject lacks)
    third = simulation.bold[0].copy()
    third[:, 5] = np.nan
    for subject, bold in enumerate(list(simulation.bold) + [third]):
        table = tmp_path / f"sub-{subject + 1:02d}_rois.tsv"
        np.savetxt(table, bold, delimiter="\t", fmt="%.9g",
                   header="\t".join(f"roi{i:03d}" for i in range(bold.shape[1])), comments="")
        tables.append(str(table))
    real = copy.deepcopy(config)
    # the bundled story's scan starts with each run's audio
    real["fmri"].update(source="roi", paths=tables, first_volume_s=[0.0, 0.0])
    real["interventions"]["study_b"] = False
    summary = run_study(real, progress=False)
    status = summary.stage_status()
    assert [status[s] for s in ("record", "timecourse", "patterns")] == ["cached"] * 3
    assert status["fmri"] == "computed" and summary.recovery == {}
    encoding_dir = Path(next(r.path for r in summary.stages if r.stage == "encoding"))
    for subject in (1, 2):
        ours = load(encoding_dir / "tiny-llama" / "data" / f"sub-{subject:02d}")
        reference = load(paths["encoding"] / "tiny-llama" / "roi" / f"sub-{subject:02d}")
        np.testing.assert_allclose(ours.r, reference.r, atol=1e-4)
    assert summary.maps["tiny-llama/data"]["r"].endswith(".tsv")
    # the subjects fitted, not the simulation's n_subjects; no simulation settings
    assert summary.sizes["n_subjects"] == 3 != real["fmri"]["n_subjects"]
    assert "n_planted" not in summary.sizes and "snr" not in summary.sizes
    # atom maps: the mean over the subjects that have the target (a missing one is not a 0)
    subjects = [pattern_maps(load(encoding_dir / "tiny-llama" / "data" / f"sub-{k:02d}"),
                             band="atoms") for k in (1, 2, 3)]
    assert np.isnan(subjects[2][:, 5]).all()
    maps = Study(real, progress=False).pattern_maps("tiny-llama", "data")
    np.testing.assert_allclose(maps[:, 5], (subjects[0][:, 5] + subjects[1][:, 5]) / 2, rtol=1e-6)
    np.testing.assert_allclose(maps[:, 4], sum(m[:, 4] for m in subjects) / 3, rtol=1e-6)


def test_config_example_and_demo_files_validate(tmp_path):
    from click.testing import CliRunner

    from brainalign.cli import main
    from brainalign.pipeline.config import load_config

    runner = CliRunner()
    for args in (["config", "example"], ["config", "example", "--demo"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        path = tmp_path / f"{len(args)}.toml"
        path.write_text(result.output)
        config = load_config(path)
        assert config["study"]["out"].startswith(str(tmp_path))
    assert config["fmri"]["spaces"] == ["fsaverage5", "MNI152_3mm"]
    assert config["model"]["names"] == ["smollm2-135m-instruct-q4"]
    assert config["interventions"]["study_b"]


def test_run_command_names_the_bad_key(tmp_path):
    from click.testing import CliRunner

    from brainalign.cli import main

    path = tmp_path / "bad.toml"
    path.write_text('[patterns]\nmethod = "nmf"\n')
    result = CliRunner().invoke(main, ["run", str(path)])
    assert result.exit_code != 0
    assert "patterns.method" in result.output and "dictionary" in result.output


def _encodings(summary):
    from brainalign.encoding import load

    encoding_dir = next(run.path for run in summary.stages if run.stage == "encoding")
    return [load(p) for p in sorted((Path(encoding_dir) / "tiny-llama" / "roi").glob("sub-*"))]


@pytest.mark.timeout(600)
def test_study_on_a_local_dask_cluster_equals_the_serial_study(first_run, tmp_path):
    config, serial = first_run
    distributed_config = copy.deepcopy(config)
    distributed_config["study"]["out"] = str(tmp_path / "dask-out")
    distributed_config["compute"].update(scheduler="local", n_workers=2)
    distributed = run_study(distributed_config, progress=False)
    events = {line.get("event") for line in read_log(distributed.out)
              if line.get("scheduler") == "local"}
    assert events == {"record", "encoding"}
    story = bundled_story()
    recordings = [Recording.open(next(run.path for run in summary.stages if run.stage == "record")
                                 + f"/tiny-llama/{story.name}")
                  for summary in (serial, distributed)]
    np.testing.assert_array_equal(recordings[0].matrix(), recordings[1].matrix())
    serial_results, dask_results = _encodings(serial), _encodings(distributed)
    assert len(dask_results) == len(serial_results) == 2
    for a, b in zip(serial_results, dask_results):
        np.testing.assert_array_equal(a.r, b.r)
        np.testing.assert_array_equal(a.alphas, b.alphas)
        np.testing.assert_array_equal(a.coef, b.coef)
    assert distributed.recovery["accuracy"] == serial.recovery["accuracy"]


def test_inputs_rewritten_at_the_same_path_are_computed_again(first_run, tmp_path):
    """A corrected transcript or re-preprocessed fMRI written over the old file: the stages
    that read it are computed again (their keys hold the files' fingerprints and the
    stories' words), the others still come from the cache."""
    from brainalign.encoding import load
    from brainalign.simulate import Simulation
    from brainalign.stimuli import Story, Word, bundled_story, write_table

    config, first = first_run
    simulation = Simulation.load(Path(next(r.path for r in first.stages if r.stage == "fmri"))
                                 / "tiny-llama" / "roi")
    story = bundled_story()
    split = np.cumsum(story.n_volumes)[:-1]  # one table per run: the TSV story has no scan
    tables = [[tmp_path / f"sub-{subject + 1:02d}_run-{run + 1}.tsv"
               for run in range(story.n_runs)] for subject in range(len(simulation.bold))]
    for paths, bold in zip(tables, simulation.bold):
        for path, part in zip(paths, np.split(bold, split)):
            np.savetxt(path, part, delimiter="\t", fmt="%.9g")
    transcript = write_table(story, tmp_path / "story.tsv")
    real = copy.deepcopy(config)
    real["stories"].update(bundled=False, paths=[str(transcript)])
    real["fmri"].update(source="roi", paths=[[str(t) for t in paths] for paths in tables],
                        first_volume_s=list(story.first_volume_s))
    real["interventions"]["study_b"] = False
    real["networks"]["atlas"] = "none"
    real["outputs"]["report"] = False
    real["encoding"]["n_permutations"] = 0
    real["study"]["out"] = str(tmp_path / "out")

    def encoding_r(summary, subject):
        folder = Path(next(r.path for r in summary.stages if r.stage == "encoding"))
        return load(folder / "tiny-llama" / "data" / f"sub-{subject:02d}").r

    before = run_study(real, progress=False)
    noise = np.random.default_rng(0).standard_normal((story.n_volumes[0],
                                                       simulation.bold[0].shape[1]))
    np.savetxt(tables[0][0], noise, delimiter="\t", fmt="%.9g")  # same path, same shape
    after = run_study(real, progress=False)
    status = after.stage_status()
    assert [status[s] for s in ("record", "timecourse", "patterns")] == ["cached"] * 3
    assert status["fmri"] == status["encoding"] == "computed"
    assert not np.allclose(encoding_r(after, 1), encoding_r(before, 1))
    np.testing.assert_allclose(encoding_r(after, 2), encoding_r(before, 2), atol=1e-6)
    # a transcript corrected in place: same file, same times, one word changed
    words = list(story.words)
    words[5] = Word("corrected", words[5].onset_s, words[5].offset_s, words[5].run)
    write_table(Story(story.name, tuple(words)), transcript)
    status = run_study(real, progress=False).stage_status()
    assert status["record"] == status["encoding"] == "computed"
    # maps of a run that writes none do not linger from the run before
    maps = tmp_path / "out" / "maps"
    assert any(maps.iterdir())
    real["outputs"]["maps"] = False
    assert run_study(real, progress=False).maps == {} and not maps.exists()


def write_two_run_study(folder, n_volumes=(12, 10)):
    """A two-run TSV story (words 6 .. 21.5 s and 6 .. 17.5 s) and one subject's ROI tables,
    one per run."""
    rows = ["word\tonset\toffset\trun"]
    for run, n_words in enumerate((16, 12)):
        rows += [f"w{run}_{i}\t{6 + i}\t{6.5 + i}\t{run}" for i in range(n_words)]
    story = folder / "two.tsv"
    story.write_text("\n".join(rows) + "\n")
    tables = []
    for run, n in enumerate(n_volumes):
        table = folder / f"sub-01_run-{run + 1}.tsv"
        np.savetxt(table, np.random.default_rng(run).standard_normal((n, 3)), delimiter="\t")
        tables.append(str(table))
    return str(story), tables


def real_study(story, paths, **fmri):
    return validate({"stories": {"bundled": False, "paths": [story]},
                     "fmri": {"source": "roi", "paths": paths, **fmri}})


def test_study_stories_take_real_scans_from_the_brain_files_and_the_config(tmp_path):
    from brainalign.pipeline.study import study_stories

    story, tables = write_two_run_study(tmp_path)
    (scanned,) = study_stories(real_study(story, [tables], discarded_volumes=[2, 3]))
    assert scanned.n_volumes == (12, 10) and scanned.first_volume_s == (4.0, 6.0)
    (scanned,) = study_stories(real_study(story, [tables], first_volume_s=[5.5, 0.0]))
    assert scanned.first_volume_s == (5.5, 0.0) and scanned.tr_s == 2.0


@pytest.mark.parametrize("paths, fmri, fragment", [
    ("per-run", {"first_volume_s": [4.0]},
     "fmri.first_volume_s has 1 entries but the stories have 2 run(s) (two: 2)"),
    ("one-file", {"first_volume_s": [4.0, 4.0]},
     "holds 12 volumes for 2 runs (two: 2) and the stories do not split them"),
    ("per-run", {"discarded_volumes": [10, 0]},
     "run 0: 14 of 16 word(s) outside the scan: words 6.000 .. 21.500 s, scan 20.000 .. "
     "44.000 s"),
])
def test_study_stories_errors_name_the_keys_and_the_runs(tmp_path, paths, fmri, fragment):
    from brainalign.pipeline.config import ConfigError
    from brainalign.pipeline.study import study_stories

    story, tables = write_two_run_study(tmp_path)
    entry = tables if paths == "per-run" else tables[0]
    with pytest.raises(ConfigError) as err:
        study_stories(real_study(story, [entry], **fmri))
    assert fragment in str(err.value)


def test_study_stories_words_outside_the_scan_pass_only_when_allowed(tmp_path):
    from brainalign.pipeline.study import study_stories

    story, tables = write_two_run_study(tmp_path, n_volumes=(6, 10))  # run 0 ends at 16 s
    config = real_study(story, [tables], first_volume_s=[4.0, 4.0], allow_words_outside_scan=True)
    (scanned,) = study_stories(config)
    assert scanned.run_summary()[0]["n_outside_scan"] == 6


def test_a_story_with_its_own_scan_must_agree_with_the_data(tmp_path):
    from brainalign.pipeline.config import ConfigError
    from brainalign.pipeline.study import study_stories

    story = bundled_story()
    table = tmp_path / "sub-01.tsv"
    np.savetxt(table, np.zeros((sum(story.n_volumes), 2)), delimiter="\t")
    config = validate({"fmri": {"source": "roi", "paths": [str(table)],
                                "first_volume_s": [0.0, 0.0]}})
    assert study_stories(config)[0].n_volumes == story.n_volumes  # one file split by the story
    config["fmri"]["first_volume_s"] = [20.0, 0.0]
    with pytest.raises(ConfigError, match=r"carries its own scan \(\(132, 147\) volumes, first "
                       r"at \(0.0, 0.0\) s\) but the study gives \(132, 147\) volumes, first at "
                       r"\(20.0, 0.0\) s"):
        study_stories(config)
