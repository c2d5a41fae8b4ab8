"""The study's group stage on stand-in encoding results: maps per measure, bands from the
partition (when present), skips, export, summary and the report section."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from brainalign.brain import RoiTableMasker
from brainalign.pipeline.cache import StageCache
from brainalign.pipeline.config import validate
from brainalign.pipeline.group_stage import (export_group_maps, group_maps, group_summary,
                                             run_group_stage, subject_measures)
from brainalign.group.inference import smallest_attainable_p as smallest_p

pytestmark = pytest.mark.usefixtures("single_thread")

N_ROIS = 30


@dataclass
class FakeResult:
    """What the group stage reads of an EncodingResult."""

    r: np.ndarray
    valid_targets: np.ndarray
    provenance: dict = field(default_factory=dict)
    partition: dict | None = None


class FakeStudy:
    """The parts of brainalign.pipeline.study.Study the group stage uses."""

    def __init__(self, out: Path, results: list, **group):
        self.config = validate({"study": {"out": str(out), "seed": 0}, "group": group})
        self.cache = StageCache(out)
        self.models = [("tiny", "tiny-model")]
        self.spaces = ["roi"]
        self.results = results
        self.masker = RoiTableMasker(names=[f"roi{i:03d}" for i in range(N_ROIS)]).fit()
        self.notes: list[str] = []
        self.runs: list[tuple[str, str]] = []

    def encodings(self, slug, space):
        return self.results

    def brain(self, slug, space):
        return SimpleNamespace(masker=self.masker)

    def stage(self, name, build):
        with self.cache.build(name, self.config) as folder:
            build(folder)
        self.runs.append((name, "computed"))

    def skip(self, name):
        self.runs.append((name, "skipped"))


def results(n_subjects: int, bands: bool = True, seed: int = 0) -> list[FakeResult]:
    rng = np.random.default_rng(seed)
    out = []
    for subject in range(n_subjects):
        r = rng.normal(0.0, 0.05, N_ROIS)
        r[:3] += 0.3                                  # three ROIs every subject predicts
        valid = np.ones(N_ROIS, bool)
        valid[-1] = subject != 0                      # invalid in one subject: left out
        unique = rng.normal(0.0, 0.02, (2, N_ROIS))
        unique[1, 5] += 0.2                           # band "semantic" adds to ROI 5
        partition = {"bands": ["lowlevel", "semantic"], "r_unique": unique} if bands else None
        out.append(FakeResult(np.where(valid, r, np.nan), valid,
                              {"subject": f"sub-{subject + 1:02d}"}, partition))
    return out


def test_group_stage_maps_r_and_each_bands_unique_r(tmp_path):
    study = FakeStudy(tmp_path, results(8), n_perm=500)
    run_group_stage(study)
    assert study.runs == [("group", "computed")] and study.notes == []
    maps = group_maps(study, "tiny", "roi")
    assert list(maps) == ["r", "unique_r:lowlevel", "unique_r:semantic"]
    r = maps["r"]
    assert r.fisher_z and r.method == "maxt" and r.subjects[0] == "sub-01"
    assert np.flatnonzero(r.significant()).tolist() == [0, 1, 2]
    assert not r.tested[-1] and np.isnan(r.p_fwe[-1])
    assert not maps["unique_r:semantic"].fisher_z
    assert np.flatnonzero(maps["unique_r:semantic"].significant()).tolist() == [5]
    assert not maps["unique_r:lowlevel"].significant().any()
    summary = group_summary(study)["tiny/roi"]
    assert summary["r"]["n_significant"] == 3 and summary["r"]["n_tested"] == N_ROIS - 1
    assert summary["unique_r:semantic"]["n_significant"] == 1

    written = export_group_maps(study, "tiny", "roi", study.masker, tmp_path / "maps",
                                {"model": "tiny"}, {"model": "tiny-model"})
    assert set(written) == {f"{desc}_{stat}" for desc in ("group", "groupuniquelowlevel",
                                                          "groupuniquesemantic")
                            for stat in ("t", "pfwe", "mean")}
    assert Path(written["groupuniquesemantic_pfwe"]).name == (
        "space-roi_desc-groupuniquesemantic_stat-pfwe_model-tiny_map.tsv")


def test_results_without_a_partition_give_the_r_map_only():
    measures = subject_measures(results(4, bands=False))
    assert list(measures) == ["r"] and measures["r"].shape == (4, N_ROIS)
    mixed = results(4)
    mixed[2].partition = None
    assert list(subject_measures(mixed)) == ["r"]


def test_group_stage_is_skipped_without_permutations_or_with_one_subject(tmp_path):
    study = FakeStudy(tmp_path / "a", results(1))
    run_group_stage(study)
    assert study.runs == [("group", "skipped")] and "at least 2 subjects" in study.notes[0]
    assert group_maps(study, "tiny", "roi") == {} and group_summary(study) == {}
    study = FakeStudy(tmp_path / "b", results(4), n_perm=0)
    run_group_stage(study)
    assert study.runs == [("group", "skipped")]
    study = FakeStudy(tmp_path / "c", results(3), n_perm=100)
    run_group_stage(study)
    assert study.runs == [("group", "computed")] and "cannot reach" in study.notes[0]
    assert smallest_p(3, 100, 1) == 1 / 8 and smallest_p(12, 100, 0) == 1 / 101


def test_report_section_draws_one_figure_per_group_map_where_targets_pass(tmp_path):
    from brainalign.pipeline.study_report import _group_section
    from brainalign.report.html import Report

    study = FakeStudy(tmp_path, results(6), n_perm=200)
    run_group_stage(study)
    report = Report("group")
    _group_section(report, study, "tiny")
    text = Path(report.write(tmp_path / "report.html")).read_text()
    assert "<h2>Group maps</h2>" in text
    assert text.count("data:image/png;base64,") == 2   # r and the planted band's unique r
    assert "3 of 29 tested targets at p_FWE &lt; 0.05" in text
    assert text.count("no map to show") == 1           # the band without signal


def test_report_section_shows_no_empty_group_map(tmp_path):
    """A map where nothing passes would show only the underlay: the report says so instead."""
    from brainalign.pipeline.study_report import _group_section
    from brainalign.report.html import Report

    # alpha below the smallest p that 200 sign flips can give
    study = FakeStudy(tmp_path, results(6), n_perm=200, alpha=1e-6)
    run_group_stage(study)
    report = Report("group")
    _group_section(report, study, "tiny")
    text = Path(report.write(tmp_path / "report.html")).read_text()
    assert "data:image/png;base64," not in text
    assert text.count("tested targets at p_FWE &lt; 1e-06") == 3
    assert text.count("no map to show") == 3
