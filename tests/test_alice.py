"""The Alice (Brennan 2016) loader and a reduced run of analysis/alice_encoding.py (real data)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from conftest import REPO, shared_data

from brainalign.brain.alice import ROI_NAMES, load_alice


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
    # the published predictors start 10 volumes before the time courses: the shifted
    # rate_conv column is the per-subject rate regressor
    assert np.corrcoef(data.predictors_on_scan()[:, 0], data.rate[0])[0, 1] > 0.95


def test_reduced_analysis_finds_word_rate_signal():
    module = _analysis_module()
    config = module.AliceConfig(n_subjects=3, models=("word_rate",), n_perm=200,
                                candidate_offsets_s=(0.0, 10.0, 20.0, 30.0), sweep_components=())
    document = module.run(shared_data("alice_brennan2016"), config, cache_dir=REPO / "unused")
    summary = document["summary"]
    assert summary["offset_s"] == 20.0 and summary["rate_corr"] > 0.95
    r_group = np.array(list(summary["r_group"]["word_rate"].values()))
    assert r_group.shape == (6,) and np.all(r_group > 0.1)
    assert summary["rois_llm_beats_published"] is None
    assert all(0 <= n <= 3 for n in summary["n_sig_subjects"]["word_rate"].values())
