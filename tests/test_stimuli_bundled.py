"""The bundled story (data/stories) and the real Alice TextGrid from ../shared/data."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, shared_data

from brainalign.stimuli import (BUNDLED_STORY, Story, bundled_story, list_bundled_stories,
                                load_story, write_table)
from brainalign.stimuli.bundled import STORIES_ENV, rebuild_story_dir, stories_dir
from brainalign.stimuli.speech import split_transcript

STORY_DIR = REPO / "data" / "stories" / BUNDLED_STORY


@pytest.fixture(scope="module")
def story() -> Story:
    return bundled_story()


def test_bundled_story_shape_and_scan(story):
    info = json.loads((STORY_DIR / "story.json").read_text(encoding="utf-8"))
    assert story.name == BUNDLED_STORY == info["name"]
    assert 1200 <= len(story.words) <= 1500
    assert story.n_runs == 2
    assert story.tr_s == 2.0
    assert story.n_volumes == tuple(info["n_volumes"])
    # the scan starts with each run's audio: its first volume is at 0 s of the run's clock
    assert story.first_volume_s == tuple(info["first_volume_s"]) == (0.0, 0.0)
    assert info["license"].startswith("CC0")
    assert "no audio" in info["timing"]["method"]
    assert [r["n_words"] for r in info["runs"]] == [len(story.run_words(r)) for r in (0, 1)]


def test_bundled_story_timing_is_monotonic_and_inside_the_scan(story):
    for run in range(story.n_runs):
        words = story.run_words(run)
        assert words[0].onset_s == 10.0  # 10 s of silence before the first word
        for before, after in zip(words, words[1:]):
            assert before.onset_s < before.offset_s <= after.onset_s
        scan_end_s = story.first_volume_s[run] + story.n_volumes[run] * story.tr_s
        assert words[-1].offset_s + 10.0 <= scan_end_s < words[-1].offset_s + 10.0 + story.tr_s
        assert story.run_summary()[run]["n_outside_scan"] == 0
        rate = len(words) / (words[-1].offset_s - words[0].onset_s)
        assert 2.0 < rate < 3.0  # words per second, a natural narration rate


def test_bundled_story_words_are_the_text(story):
    """No word of the run texts is lost or altered (e.g. by silence filtering)."""
    for run in range(story.n_runs):
        text = (STORY_DIR / f"run-{run + 1}.txt").read_text(encoding="utf-8")
        assert [w.text for w in story.run_words(run)] == split_transcript(text)
    texts = " ".join(story.texts)
    for feature in ("café", "Tomás", "twenty-three", "117", "\"Loyal", "I'm", "keeper's"):
        assert feature in texts


def test_bundled_textgrids_equal_the_table(story):
    for run in range(story.n_runs):
        grid = load_story(STORY_DIR / f"run-{run + 1}.TextGrid")
        assert [(w.text, w.onset_s, w.offset_s) for w in grid.words] == [
            (w.text, w.onset_s, w.offset_s) for w in story.run_words(run)]
    assert load_story([STORY_DIR / "run-1.TextGrid", STORY_DIR / "run-2.TextGrid"]).words == \
        story.words


def test_bundled_files_are_a_fresh_rebuild(tmp_path):
    rebuilt = rebuild_story_dir(STORY_DIR, tmp_path)
    for name in ("run-1.txt", "run-2.txt", "run-1.TextGrid", "run-2.TextGrid", "words.tsv",
                 "story.json"):
        assert (tmp_path / name).read_bytes() == (STORY_DIR / name).read_bytes(), name
    assert rebuilt.words == bundled_story().words


def test_bundled_story_lookup_and_errors(story, tmp_path, monkeypatch):
    assert BUNDLED_STORY in list_bundled_stories()
    with pytest.raises(FileNotFoundError, match=f"no bundled story named 'nope'.*{BUNDLED_STORY}"):
        bundled_story("nope")
    shutil.copytree(STORY_DIR, tmp_path / "stories" / "copy")
    monkeypatch.setenv(STORIES_ENV, str(tmp_path / "stories"))
    assert stories_dir() == tmp_path / "stories"
    assert list_bundled_stories() == ["copy"]
    copy = bundled_story("copy")
    assert copy.words == story.words
    assert copy.name == BUNDLED_STORY  # the name comes from story.json
    with pytest.raises(FileNotFoundError, match="bundled stories: copy"):
        bundled_story()


def test_stories_dir_missing_is_a_clear_error(monkeypatch, tmp_path):
    import brainalign.stimuli.bundled as bundled

    monkeypatch.setenv(STORIES_ENV, str(tmp_path / "absent"))
    monkeypatch.setattr(bundled, "__file__", str(tmp_path / "pkg" / "stimuli" / "bundled.py"))
    with pytest.raises(FileNotFoundError, match=f"looked in {tmp_path / 'absent'}.*pip "
                       f"install -e .*{STORIES_ENV}"):
        stories_dir()


def test_story_dir_checks_n_volumes_against_runs(tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(STORY_DIR, copy)
    info = json.loads((copy / "story.json").read_text(encoding="utf-8"))
    info["n_volumes"] = [100]
    (copy / "story.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ValueError, match="n_volumes has 1 entries but words.tsv has 2 run"):
        load_story(copy)


def test_story_dir_scan_needs_the_first_volume_time_and_must_hold_the_words(tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(STORY_DIR, copy)
    info = json.loads((copy / "story.json").read_text(encoding="utf-8"))
    del info["first_volume_s"]
    (copy / "story.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ValueError, match=r"story.json: the scan is given in part \(tr_s, "
                       r"n_volumes\) but first_volume_s is missing"):
        load_story(copy)
    info["first_volume_s"] = [0.0, 20.0]  # run 2's scan would end at 314 s, words at 284 s
    (copy / "story.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ValueError, match=r"story.json: story 'the-lighthouse-keeper': run 1: "
                       r"\d+ of 697 word\(s\) outside the scan: words 10.000 .. 284.000 s, "
                       r"scan 20.000 .. 314.000 s"):
        load_story(copy)


def test_alice_textgrid(tmp_path):
    path = shared_data("alice_brennan2016", "alice_stim_shared",
                       "DownTheRabbitHoleFinal_exp120_pad_1.TextGrid")
    story = load_story(path)
    assert len(story.words) == 2127
    assert story.n_runs == 1
    assert story.metadata["format"] == "textgrid-long"
    assert story.metadata["tier"] == "word"
    assert story.words[0].text == "Alice"
    assert story.words[0].onset_s == pytest.approx(20.06, abs=0.005)
    assert story.words[-1].text == "cake"
    assert story.words[-1].offset_s == pytest.approx(743.3, abs=0.05)
    assert all(w.text == w.text.strip() and w.text for w in story.words)
    # 290 "sp" and 6 empty intervals skipped: 2,423 intervals in the file
    assert story.metadata["n_silences_skipped"] == 2423 - 2127
    table = load_story(write_table(story, tmp_path / "alice.tsv"))
    assert table.words == story.words
