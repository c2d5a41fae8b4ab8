"""A study whose atoms are fitted on a reference corpus (patterns.fit_on = "corpus:NAME")."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from test_pipeline_study import save_tiny_llama, tiny_study
from test_stimuli_corpus import fake_moby_dick

from brainalign.patterns import Patterns

from brainalign.pipeline.bands import cleaned_runs_on_disk, cleaned_timecourses
from brainalign.pipeline.config import ConfigError, validate
from brainalign.pipeline.study import Study, run_study
from brainalign.stimuli.bundled import bundled_story

CORPUS_WORDS = 1500


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("corpus-study")
    words = bundled_story().texts
    paragraphs = [" ".join(words[i:i + 50]) for i in range(0, len(words) - 50, 50)]
    chapters = [(str(i + 1), f"Part {i + 1}.", paragraphs[i % len(paragraphs)])
                for i in range(40)]
    fake_moby_dick(root / "cache" / "corpora" / "moby-dick" / "package", chapters=chapters)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("BRAINALIGN_CACHE", str(root / "cache"))
    config = tiny_study(save_tiny_llama(root / "tiny-llama"), root / "out",
                        patterns__fit_on="corpus:moby-dick", patterns__corpus_words=CORPUS_WORDS,
                        interventions__study_b=False, networks__n_null=50,
                        encoding__n_band_shifts=0, encoding__n_permutations=0)
    summary = run_study(config, progress=False)
    yield config, summary, root
    monkeypatch.undo()


def test_corpus_atoms_are_fitted_on_the_corpus_and_applied_to_the_story(corpus_run):
    config, summary, root = corpus_run
    stages = {run.stage: run.status for run in summary.stages}
    assert stages["corpus"] == "computed" and stages["patterns"] == "computed"
    study = Study(config, progress=False)
    corpus = study.corpus_timecourses("tiny-llama")
    story = study.timecourses("tiny-llama")
    assert corpus.data.shape[1] == story.data.shape[1]  # the same neurons
    assert corpus.provenance["corpus"]["n_words"] == CORPUS_WORDS
    patterns = study.patterns("tiny-llama")
    # fitted on every corpus TR, none of the story's
    assert len(patterns.times_s) == corpus.n_tr != story.n_tr
    assert patterns.provenance["in_memory"] is False
    assert patterns.provenance["timecourses"]["corpus"]["corpus"] == "moby-dick"
    # the out-of-core fit equals fitting the cleaned corpus in memory
    cleaned = cleaned_timecourses(corpus, config)
    from brainalign.patterns import fit_atoms
    in_memory = fit_atoms(cleaned, 6, train_runs="all", random_state=0, alpha=0.1)
    np.testing.assert_allclose(patterns.loadings, in_memory.loadings, atol=1e-4)
    # the study's atom regressors are the corpus atoms applied to the cleaned story
    np.testing.assert_allclose(study.atom_regressors("tiny-llama"),
                               patterns.transform(cleaned_timecourses(story, config).data),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(study.story_atoms("tiny-llama"),
                                  study.atom_regressors("tiny-llama"))
    # stability is reported (split halves of the corpus runs, a second seed)
    assert {"seed", "split_half"} <= set(patterns.stability)
    assert -1 <= patterns.stability["split_half"]["subgroup_ari"] <= 1
    # no per-fold refits and no whole-story comparison: corpus atoms never see a fold
    encoding = next(p for p in (root / "out" / "cache").glob("encoding-*") if p.is_dir())
    assert not list(encoding.glob("*/*/whole-story-atoms"))


def test_a_new_atom_count_reuses_the_corpus_recording(corpus_run):
    config, _, root = corpus_run
    changed = {**config, "patterns": {**config["patterns"], "n_atoms": 5}}
    summary = run_study(changed, progress=False)
    stages = {run.stage: run.status for run in summary.stages}
    assert stages["corpus"] == "cached" and stages["patterns"] == "computed"
    assert Patterns.load(next((root / "out" / "cache").glob("patterns-*/tiny-llama"))
                         ).loadings.shape[1] > 0
    fewer_words = {**config, "patterns": {**config["patterns"], "corpus_words": 1000}}
    assert Study(fewer_words, progress=False).cache.key("corpus", fewer_words) != \
        Study(config, progress=False).cache.key("corpus", config)


def test_story_fits_skip_the_corpus_stage(tmp_path):
    config = validate({"study": {"out": str(tmp_path)}})
    assert config["patterns"]["fit_on"] == "story"
    study_key = Study(config, progress=False).cache.key
    other = {**config, "patterns": {**config["patterns"], "n_atoms": 8}}
    assert study_key("corpus", config) == Study(other, progress=False).cache.key("corpus", other)


@pytest.mark.parametrize("patterns, fragment", [
    ({"fit_on": "corpus:alice"}, 'allowed: "story", "corpus:moby-dick", "corpus:sotu"'),
    ({"fit_on": "moby-dick"}, "patterns.fit_on = 'moby-dick'"),
    ({"fit_on": "corpus:sotu", "corpus_words": 100}, "patterns.corpus_words = 100 is too few"),
    ({"fit_on": "corpus:sotu", "method": "ica"}, 'patterns.method = "ica" cannot'),
])
def test_fit_on_errors_name_the_key(patterns, fragment):
    with pytest.raises(ConfigError) as error:
        validate({"patterns": patterns})
    assert fragment in str(error.value)


def test_cleaning_run_by_run_on_disk_equals_cleaning_in_memory(tmp_path):
    from brainalign.record.neurons import NeuronTable
    from brainalign.timecourse import NeuronTimecourses

    rng = np.random.default_rng(0)
    runs = np.repeat([0, 1, 2], [50, 70, 60])
    data = (rng.standard_normal((180, 40)) + np.linspace(0, 5, 180)[:, None]).astype(np.float32)
    timecourses = NeuronTimecourses(
        data=data, times_s=np.arange(180) * 2.0, runs=runs,
        neurons=NeuronTable(np.zeros(40, int), np.full(40, "mlp.out"), np.arange(40)),
        provenance={"story": "toy", "tr_s": 2.0})
    config = validate({})
    on_disk = cleaned_runs_on_disk(timecourses, config, tmp_path / "clean.npy")
    in_memory = cleaned_timecourses(timecourses, config)
    assert isinstance(on_disk.data, np.memmap)
    np.testing.assert_allclose(on_disk.data, in_memory.data, atol=1e-5)
    assert abs(np.asarray(on_disk.data)[runs == 1].mean()) < 1e-5  # each run cleaned
    assert json.loads(json.dumps(on_disk.provenance["cleaning"]))["fitted"] == "each whole run"
    # a corpus on its own grid is cleaned at its own TR (the high-pass cut-off is in Hz),
    # whatever the stories' TR
    fast = dataclasses.replace(timecourses, times_s=np.arange(180) * 1.5,
                               provenance={"story": "toy", "tr_s": 1.5})
    on_disk = cleaned_runs_on_disk(fast, config, tmp_path / "clean-fast.npy")
    at_its_tr = cleaned_timecourses(fast, validate({"stories": {"tr_s": 1.5}}))
    np.testing.assert_allclose(on_disk.data, at_its_tr.data, atol=1e-5)
    assert not np.allclose(on_disk.data, in_memory.data, atol=1e-3)
