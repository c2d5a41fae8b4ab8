"""The Alice (Brennan 2016) loader and a reduced run of analysis/alice_encoding.py (real data)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from conftest import REPO, shared_data

from brainalign.brain.alice import FIRST_VOLUME_S, ROI_NAMES, load_alice
from brainalign.timecourse import words_to_tr


def _analysis_module():
    spec = importlib.util.spec_from_file_location("alice_encoding", REPO / "analysis" / "alice_encoding.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["alice_encoding"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_missing_data_gives_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Alice data not found"):
        load_alice(tmp_path / "nowhere")


def test_loader_reads_usable_subjects_and_predictors():
    data = load_alice(shared_data("alice_brennan2016"))
    assert data.n_subjects == 27 and "s33" not in data.subjects
    assert "constant" in data.excluded["s33"]
    assert data.timecourses.shape == (27, 362, 6) and data.roi_names == ROI_NAMES
    assert data.predictors.shape == (372, 12) and data.predictor_names[0] == "rate_conv"
    assert data.predictor_names[-1] == "trigrampos_conv_orth"
    assert data.rate.shape == (27, 362)
    assert len(data.story.words) == 2127 and data.story.n_volumes == (362,)
    assert data.story.first_volume_s == (20.0,) and data.first_volume_s == FIRST_VOLUME_S == 20.0
    # the published predictors start 10 volumes before the time courses: the shifted
    # rate_conv column is the per-subject rate regressor
    assert np.corrcoef(data.predictors_on_scan()[:, 0], data.rate[0])[0, 1] > 0.95


def test_first_kept_volume_at_20_s_matches_the_release_word_rate_regressor():
    """The story's scan (first kept volume at 20 s) puts the TextGrid words where the
    release's own word-rate regressor has them; a scan one TR off fits worse, and one that
    forgets the 10 discarded volumes (or counts them twice) does not fit at all."""
    data = load_alice(shared_data("alice_brennan2016"))
    reference = data.rate.mean(0)
    words = np.ones(len(data.story.words))

    def rate_corr(first_volume_s):
        story = data.story.with_scan(2.0, [362], first_volume_s=first_volume_s,
                                     allow_words_outside_scan=True)
        rate = words_to_tr(words, story, method="hrf", allow_words_outside_scan=True)
        return np.corrcoef(rate, reference)[0, 1]

    on_scan = words_to_tr(words, data.story, method="hrf")  # the loader's scan, no override
    assert np.corrcoef(on_scan, reference)[0, 1] > 0.98
    assert rate_corr(18.0) < 0.9 and rate_corr(22.0) < 0.9
    assert abs(rate_corr(0.0)) < 0.2 and abs(rate_corr(40.0)) < 0.2


def test_reduced_analysis_finds_word_rate_signal():
    """The pre-registered analysis on 3 subjects, with two cheap word-level features standing
    in for the language model (word length and the words' position in the story)."""
    from sklearn.decomposition import PCA

    from brainalign.encoding import fold_features

    module = _analysis_module()
    config = module.AliceConfig(n_subjects=3, n_perm=50, n_band_shifts=50, n_split_halves=20,
                                spheres_mm=(6,), exploratory_components=0)
    path = shared_data("alice_brennan2016")
    data = load_alice(path)
    words = np.array([[len(w.text), i / len(data.story.words)]
                      for i, w in enumerate(data.story.words)])
    llm = words_to_tr(words, data.story, method="hrf")
    atoms = fold_features(llm, None, PCA(1), n_blocks=5, tr_s=2.0)
    result = module.analyse_sphere(6, path, llm, atoms, config, None)
    rois = list(data.roi_names)
    r_group = np.array([result["r_group"]["word_rate"][roi] for roi in rois])
    assert np.all(r_group > 0.1), r_group
    for key in ("unique_r_llm_beyond_word_rate", "unique_r_llm_beyond_published"):
        assert set(result[key]) == set(rois)
        assert all(0 < entry["p"] <= 1 and entry["p"] <= entry["p_fdr"] <= 1
                   for entry in result[key].values())
    assert all(0 <= n <= 3 for counts in result["n_sig_subjects"].values() for n in counts.values())
    ceilings = result["noise_ceiling"]
    for roi in rois:   # Spearman-Brown from the split-half correlation to the whole group
        half = ceilings["split_half_r"][roi]
        assert ceilings["split_half_sb"][roi] == pytest.approx(2 * half / (1 + half), abs=2e-4)
        assert -1 < ceilings["isc_loso"][roi] < 1
    assert result["atoms_per_fold_over_full"].keys() == set(rois)
    assert module.PROTOCOL.startswith("Data.") and "1,000 circular shifts" in module.PROTOCOL
