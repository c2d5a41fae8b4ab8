"""Pattern stability as a study output: summary means, the curve over K, the report part."""

from __future__ import annotations

import copy
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from brainalign.patterns import Patterns, consensus_seeds
from brainalign.patterns.stability import CURVE_METRICS, stability_curve
from brainalign.pipeline.bands import cleaned_timecourses
from brainalign.pipeline.config import ConfigError, example_toml, validate
from brainalign.pipeline.study import STABILITY_CURVE, Study, run_study
from test_pipeline_study import save_tiny_llama, tiny_study

SLUG = "tiny-llama"


@pytest.fixture(scope="module")
def stability_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("stability")
    model_dir = save_tiny_llama(root / "tiny-llama")
    config = tiny_study(model_dir, root / "out", interventions__study_b=False,
                        encoding__n_permutations=0, encoding__n_band_shifts=0,
                        networks__n_null=50, networks__n_shifts=50, group__n_perm=0,
                        patterns__stability_k=[4, 2], patterns__consensus_fits=2)
    return config, run_study(config, progress=False)


def test_stability_k_is_validated():
    assert validate({})["patterns"]["stability_k"] == []
    assert "stability_k = []" in example_toml()
    assert validate({"patterns": {"stability_k": [2, 8]}})["patterns"]["stability_k"] == [2, 8]
    for bad in ([1], [2, "4"], [True], [2.5], 4):
        with pytest.raises(ConfigError, match=r"patterns\.stability_k"):
            validate({"patterns": {"stability_k": bad}})


def test_consensus_fits_is_validated():
    assert validate({})["patterns"]["consensus_fits"] == 1
    assert "consensus_fits = 1" in example_toml()
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises(ConfigError, match=r"patterns\.consensus_fits"):
            validate({"patterns": {"consensus_fits": bad}})


def test_summary_carries_the_saved_patterns_stability_means(stability_run):
    config, summary = stability_run
    document = json.loads((Path(summary.out) / "summary.json").read_text())
    entry = document["patterns_stability"][SLUG]
    assert entry == summary.patterns_stability[SLUG]
    stability = Study(config, progress=False).patterns(SLUG).stability
    for kind, keys in (("seed", ("atom_r_mean", "loading_r_mean", "subgroup_ari_mean",
                                 "subgroup_iou_mean")),
                       ("split_half", ("atom_r_mean", "loading_r_mean", "subgroup_ari",
                                       "subgroup_iou_mean"))):
        for key in keys:
            value = entry[kind][key]
            assert isinstance(value, float) and -1.0 <= value <= 1.0, (kind, key, value)
            assert value == stability[kind][key], (kind, key)
        assert "pairs" not in entry[kind] and "loading_r" not in entry[kind]  # means only
    assert entry["seed"]["reference_seed"] == 0 and entry["seed"]["seeds"] == [1]
    assert entry["split_half"]["scheme"] == stability["split_half"]["scheme"]
    assert entry["fitted_on"].startswith("story: ")
    assert entry["split_half"]["subspace_canonical_r_mean"] == \
        stability["split_half"]["subspace"]["canonical_r_mean"]
    # consensus_fits = 2 on a short story: the exact SVD start makes both fits the same
    assert entry["consensus"] == {"n_fits": 2, "reliability_mean": pytest.approx(1.0),
                                  "reliability_min": pytest.approx(1.0)}
    assert stability["consensus"]["seeds"] == consensus_seeds(0, 2)
    assert entry["curve"].endswith(f"{SLUG}/{STABILITY_CURVE}")
    assert any(label == f"pattern stability {SLUG}" for label, _ in summary.rows())


def test_stability_curve_json_equals_a_direct_curve_on_the_cleaned_timecourses(stability_run):
    config, summary = stability_run
    study = Study(config, progress=False)
    path = study.stability_curve_path(SLUG)
    assert path.parent.parent.name.startswith("patterns-") and path.parent.name == SLUG
    assert path.parent.parent.parent == Path(summary.out) / "cache"
    saved = json.loads(path.read_text())
    assert saved["candidates"] == [2, 4] and saved["requested"] == [2, 4]
    assert saved["fitted_on"] == "story" and saved["params"]["seeds"] == [1]
    # the curve sits beside the saved Patterns, which still load
    assert Patterns.load(path.parent).n_atoms == config["patterns"]["n_atoms"]

    torch.set_num_threads(1)
    cleaned = cleaned_timecourses(study.timecourses(SLUG), study.config)
    direct = stability_curve(cleaned, [2, 4], seeds=[1], split_half=True, train_runs="all",
                             method="dictionary", alpha=config["patterns"]["alpha"],
                             random_state=0, consensus_fits=2)
    for name in CURVE_METRICS:
        values = np.asarray(saved[name], dtype=float)
        assert values.shape == (2,) and np.all(np.isfinite(values)), name
        np.testing.assert_allclose(values, getattr(direct, name), rtol=1e-6, atol=1e-9,
                                   err_msg=name)
    assert np.all(np.asarray(saved["split_half_loading_r"]) <= 1.0)


def test_report_has_the_stability_table_and_the_curve_figure(stability_run):
    _, summary = stability_run
    text = Path(summary.report).read_text()
    assert "<h2>Pattern stability</h2>" in text
    part = text[text.index("<h2>Pattern stability</h2>"):]
    part = part[:part.index("</section>")]
    for header in ("matched atom r", "matched loading r", "subgroup ARI", "subgroup IoU"):
        assert f"<th>{header}</th>" in part, header
    entry = summary.patterns_stability[SLUG]
    seed_row = re.search(r"<tr><td>seed</td>(.*?)</tr>", part).group(1)
    assert f"{entry['seed']['loading_r_mean']:.4g}" in seed_row
    half_row = re.search(r"<tr><td>split half</td>(.*?)</tr>", part).group(1)
    assert f"{entry['split_half']['subgroup_ari']:.4g}" in half_row
    assert html.escape(entry["split_half"]["scheme"]) in half_row
    subspace = entry["split_half"]["subspace_canonical_r_mean"]
    assert f"mean canonical correlation of {subspace:.2f}" in part
    assert "consensus atoms of 2 fits" in part and "mean reliability" in part
    caption = re.search(r"<caption>(.*?)</caption>", part).group(1)
    assert "adjusted Rand index" in caption and "intersection over union" in caption
    assert "fitted on the cleaned time courses of every run of the story" in caption
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', part)
    assert len(images) == 1
    assert images[0].startswith(f"{SLUG}: stability of the atoms against the number of atoms K")
    assert "K (2, 4)" in images[0]


def test_notes_of_the_patterns_stage_are_kept_when_it_is_cached(stability_run):
    config, _ = stability_run
    wide = copy.deepcopy(config)
    wide["patterns"]["stability_k"] = [4, 2, 500]  # 500 atoms: more than a split half's TRs
    note = f"patterns.stability_k: {SLUG}: K = [500] left out of the stability curve"
    computed = run_study(wide, progress=False)
    assert computed.stage_status()["patterns"] == "computed"
    cached = run_study(wide, progress=False)
    assert cached.stage_status()["patterns"] == "cached"
    for summary in (computed, cached):
        assert any(n.startswith(note) for n in summary.notes), summary.notes
    document = json.loads((Path(cached.out) / "summary.json").read_text())
    assert any(n.startswith(note) for n in document["notes"])
