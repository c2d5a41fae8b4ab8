"""What a study read, in its stage cache keys: files rewritten at the same path and stories
whose words change make new keys for the stages that read them, and only for those."""

from __future__ import annotations

import os
from types import SimpleNamespace

from brainalign.pipeline.cache import StageCache
from brainalign.pipeline.config import validate
from brainalign.pipeline.inputs import fingerprint, study_inputs
from brainalign.stimuli import Story, Word


def rewrite(path, text):
    """Write ``text`` and move the modification time on (a rewrite within one clock tick)."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_fingerprints_follow_rewrites_of_files_and_folders(tmp_path):
    table = tmp_path / "bold.tsv"
    rewrite(table, "1\t2\n")
    first = fingerprint(table)
    assert fingerprint(table) == first  # read again: unchanged
    rewrite(table, "3\t4\n")  # same size, new contents
    assert fingerprint(table) != first
    folder = tmp_path / "model"
    folder.mkdir()
    rewrite(folder / "config.json", "{}")
    rewrite(folder / "weights.bin", "a")
    before = fingerprint(folder)
    rewrite(folder / "weights.bin", "b")
    assert fingerprint(folder) != before
    assert fingerprint(tmp_path / "absent") is None and fingerprint("owner/hub-model") is None


def story(word: str = "b") -> Story:
    return Story("s", (Word("a", 1.0, 1.5, 0), Word(word, 2.0, 2.5, 0)))


def test_each_stage_key_follows_the_inputs_it_reads(tmp_path):
    bold = tmp_path / "sub-01.tsv"
    rewrite(bold, "1\n")
    band = tmp_path / "band.tsv"
    rewrite(band, "1\n")
    config = validate({"fmri": {"source": "roi", "paths": [str(bold)], "first_volume_s": [0.0]},
                       "encoding": {"extra_bands": [{"name": "pitch", "path": str(band)}]}})
    cache = StageCache(tmp_path / "out")

    def keys(stories, **changed):
        inputs = study_inputs(config, stories)
        for name, value in changed.items():
            inputs[name] = value
        full = {**config, "inputs": inputs}
        return {stage: cache.key(stage, full) for stage in
                ("record", "timecourse", "patterns", "fmri", "encoding", "interventions",
                 "corpus")}

    base = keys([story()])
    words = keys([story("c")])
    assert all(words[s] != base[s] for s in base if s != "corpus")
    assert words["corpus"] == base["corpus"]  # the reference corpus reads no story
    rewrite(bold, "2\n")
    fmri = keys([story()])
    assert [s for s in base if fmri[s] != base[s]] == ["fmri", "encoding"]
    rewrite(band, "2\n")
    bands = keys([story()])
    assert [s for s in base if bands[s] != fmri[s]] == ["fmri", "encoding"]


def test_a_bids_design_fingerprints_the_files_of_its_runs(tmp_path):
    files = {}
    for name in ("bold.nii.gz", "confounds.tsv"):
        files[name] = tmp_path / name
        rewrite(files[name], name)
    run = SimpleNamespace(bold=str(files["bold.nii.gz"]), confounds=str(files["confounds.tsv"]),
                          mask=None)
    design = SimpleNamespace(runs={"01": [run]})
    config = validate({"stories": {"bundled": False},
                       "fmri": {"source": "bids", "bids": str(tmp_path)}})
    before = study_inputs(config, [story()], design)
    rewrite(files["confounds.tsv"], "confounds, again")
    after = study_inputs(config, [story()], design)
    assert after["fmri"] != before["fmri"] and after["stories"] == before["stories"]
