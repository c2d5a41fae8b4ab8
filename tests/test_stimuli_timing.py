"""Stimulus timing adapters: small synthetic BIDS trees of each public layout, real values."""

from __future__ import annotations

import json
import math

import pytest

from brainalign.stimuli import Story, Word, write_table, write_textgrid
from brainalign.stimuli.timing import (ARGUMENT_SOURCE, TIMING_LAYOUTS, RunStimulus,
                                       StimulusTiming, StimulusTimingError, lebel_timing,
                                       lepetitprince_timing, narratives_timing,
                                       read_stimulus_timing)


def write_events(path, rows, header=("onset", "duration", "trial_type", "stim_file")):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_gentle(path, words):
    """words: (text, start, end) or (text, None, None) for a word Gentle did not align."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = []
    for text, start, end in words:
        if start is None:
            entries.append({"case": "not-found-in-audio", "word": text})
        else:
            entries.append({"case": "success", "word": text, "start": start, "end": end,
                            "alignedWord": text.lower()})
    path.write_text(json.dumps({"transcript": " ".join(w[0] for w in words),
                                "words": entries}), encoding="utf-8")
    return path


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def story_of(name, *runs):
    """A Story from per-run lists of (text, onset, offset)."""
    return Story(name, tuple(Word(t, a, b, r) for r, words in enumerate(runs)
                             for t, a, b in words))


def timed(story, run):
    return [(w.text, w.onset_s, w.offset_s) for w in story.run_words(run)]


# --------------------------------------------------------------------------- Narratives

SEG = {2: [("I", 0.5, 0.7), ("began", 0.7, 1.1), ("my", 1.2, 1.4)],
       10: [("career", 0.25, 0.9), ("in", 1.0, 1.1)],
       1: [("Once", 0.3, 0.6), ("upon", 0.6, 0.9)]}


@pytest.fixture
def narratives(tmp_path):
    """Task 'tale' in runs 1, 2, 10 (one audio each); task 'solo' without run entity."""
    root = tmp_path / "ds002345"
    for run, words in SEG.items():
        write_gentle(root / "stimuli" / "gentle" / f"tale{run}" / "align.json", words)
    write_gentle(root / "stimuli" / "gentle" / "solo" / "align.json",
                 [("hello", 1.0, 1.5), ("there", None, None), ("friend", 2.0, 2.5)])
    onsets = {"001": {1: 3.0, 2: 4.5, 10: 6.0}, "002": {1: 3.25, 2: 4.75, 10: 6.25}}
    for sub, by_run in onsets.items():
        for run, onset in by_run.items():
            write_events(root / f"sub-{sub}" / "func" / f"sub-{sub}_task-tale_run-{run}_events.tsv",
                         [[0, onset, "n/a", "n/a"],
                          [onset, 30, "story", f"stimuli/tale{run}_audio.wav"]])
        touch(root / f"sub-{sub}" / "func" / f"sub-{sub}_task-tale_run-1_bold.nii.gz")
    write_events(root / "sub-001" / "func" / "sub-001_task-solo_events.tsv",
                 [[8.0, 20, "story", "solo_audio.wav"]])
    # Top-level events: every subject hears 'solo' at 12 s, unless their own file says so.
    write_events(root / "task-solo_events.tsv", [[12.0, 20, "story", "solo_audio.wav"]])
    return root


def test_narratives_onsets_story_runs_and_words(narratives):
    timing = narratives_timing(narratives)
    assert timing.layout == "narratives"
    assert set(timing.stories) == {"tale", "solo"}
    tale = timing.stories["tale"]
    # Story runs follow the fMRI run labels as integers: run-1, run-2, run-10.
    assert tale.n_runs == 3
    assert timed(tale, 0) == SEG[1]
    assert timed(tale, 1) == SEG[2]
    assert timed(tale, 2) == SEG[10]
    assert tale.metadata["alignments"] == ["tale1", "tale2", "tale10"]
    entry = timing.lookup("001", "tale", "10")
    assert entry == RunStimulus("001", "tale", "10", "tale", 2, 6.0, str(
        narratives / "sub-001" / "func" / "sub-001_task-tale_run-10_events.tsv"))
    assert timing.lookup("sub-002", "tale", "2").onset_s == 4.75
    assert timing.lookup("002", "tale", "2").story_run == 1
    # Run labels compare as integers: "01" finds run-1; ints are accepted too.
    assert timing.lookup("002", "tale", "01").onset_s == 3.25
    assert timing.lookup("002", "tale", 1).run == "1"
    assert timing.first_volume_s("001", "tale", "2") == -4.5
    assert timing.first_volume_s("002", "tale", "10") == -6.25


def test_narratives_unaligned_words_and_single_run(narratives):
    solo = narratives_timing(narratives).stories["solo"]
    assert solo.n_runs == 1
    assert solo.texts == ["hello", "there", "friend"]
    assert solo.words[1] == Word("there", 1.5, 2.0, 0)  # interpolated in the gap
    assert solo.metadata["interpolated_words"] == [1]


def test_narratives_subject_events_take_precedence_over_top_level(narratives):
    timing = narratives_timing(narratives)
    own = timing.lookup("001", "solo", None)
    assert (own.subject, own.onset_s) == ("001", 8.0)
    assert own.source.endswith("sub-001_task-solo_events.tsv")
    other = timing.lookup("002", "solo", None)
    assert (other.subject, other.onset_s) == (None, 12.0)
    assert other.source == str(narratives / "task-solo_events.tsv")
    assert timing.first_volume_s("999", "solo", None) == -12.0
    # A file without run entity applies to every run of the task (BIDS inheritance).
    assert timing.lookup("002", "solo", "3").onset_s == 12.0


def test_narratives_filters_and_provenance(narratives):
    timing = read_stimulus_timing("narratives", narratives, tasks=["tale"], subjects=["sub-002"])
    assert set(timing.stories) == {"tale"}
    assert {r.subject for r in timing.runs} == {"002"}
    summary = json.loads(json.dumps(timing.to_dict()))
    assert summary["layout"] == "narratives"
    assert summary["stories"]["tale"]["n_runs"] == 3
    assert summary["stories"]["tale"]["n_words"] == 7
    assert [(r["run"], r["story_run"], r["onset_s"]) for r in summary["runs"]] == [
        ("1", 0, 3.25), ("2", 1, 4.75), ("10", 2, 6.25)]


def test_narratives_repeated_audio_shares_a_story_run(narratives):
    write_events(narratives / "sub-003" / "func" / "sub-003_task-again_run-1_events.tsv",
                 [[2.0, 30, "story", "solo_audio.wav"]])
    write_events(narratives / "sub-003" / "func" / "sub-003_task-again_run-2_events.tsv",
                 [[5.0, 30, "story", "solo_audio.wav"]])
    timing = narratives_timing(narratives, tasks="again")
    assert timing.stories["again"].n_runs == 1
    assert [(r.run, r.story_run, r.onset_s) for r in timing.runs] == [("1", 0, 2.0),
                                                                      ("2", 0, 5.0)]


def test_narratives_run_without_story(narratives):
    timing = narratives_timing(narratives)
    with pytest.raises(StimulusTimingError, match=r"a run without its story.*sub-001 "
                       r"task-tale run-3.*narratives.*_events\.tsv") as err:
        timing.lookup("001", "tale", "3")
    assert "\n" not in str(err.value)
    with pytest.raises(StimulusTimingError, match="task-nothing"):
        timing.first_volume_s("001", "nothing", "1")


def test_narratives_conflicting_stim_file(narratives):
    bad = write_events(narratives / "sub-002" / "func" / "sub-002_task-tale_run-2_events.tsv",
                       [[4.0, 30, "story", "tale10_audio.wav"]])
    first = narratives / "sub-001" / "func" / "sub-001_task-tale_run-2_events.tsv"
    with pytest.raises(StimulusTimingError, match="conflicting stim_file") as err:
        narratives_timing(narratives)
    assert str(first) in str(err.value) and str(bad) in str(err.value)
    # Leaving the task out reads the rest.
    assert set(narratives_timing(narratives, tasks=["solo"]).stories) == {"solo"}


def test_narratives_story_without_timing(narratives):
    (narratives / "stimuli" / "gentle" / "tale10" / "align.json").unlink()
    with pytest.raises(StimulusTimingError, match="story without timing") as err:
        narratives_timing(narratives)
    message = str(err.value)
    assert str(narratives / "stimuli" / "gentle" / "tale10" / "align.json") in message
    assert "sub-001_task-tale_run-10_events.tsv" in message
    assert "\n" not in message


def test_narratives_first_of_several_stimulus_rows(narratives, caplog):
    events = write_events(narratives / "sub-001" / "func" / "sub-001_task-solo_events.tsv",
                          [[0.0, 2, "beep", "n/a"], [9.0, 20, "story", "solo_audio.wav"],
                           [40.0, 20, "story", "tale1_audio.wav"]])
    with caplog.at_level("WARNING", logger="brainalign.stimuli.timing"):
        timing = narratives_timing(narratives, tasks=["solo"])
    assert timing.lookup("001", "solo", None).onset_s == 9.0
    assert timing.stories["solo"].texts == ["hello", "there", "friend"]
    assert str(events) in caplog.text and "using the first" in caplog.text


def test_narratives_events_without_stimulus_or_onset(tmp_path):
    path = write_events(tmp_path / "sub-01" / "func" / "sub-01_task-x_events.tsv",
                        [[0, 10, "rest", "n/a"]])
    with pytest.raises(StimulusTimingError, match="no row names a stim_file"):
        narratives_timing(tmp_path)
    write_events(path, [["n/a", 10, "story", "x_audio.wav"]])
    with pytest.raises(StimulusTimingError, match=r"line 2: onset must be a number"):
        narratives_timing(tmp_path)
    path.unlink()
    with pytest.raises(StimulusTimingError, match="no events files found"):
        narratives_timing(tmp_path)


# --------------------------------------------------------------------------- LeBel 2023

ALPHA = [("so", 10.2, 10.5), ("there", 10.5, 10.9), ("I", 11.3, 11.4), ("was", 11.4, 11.8)]
BETA = [("my", 12.0, 12.2), ("father", 12.2, 12.7)]


@pytest.fixture
def lebel(tmp_path):
    root = tmp_path / "ds003020"
    grids = root / "derivative" / "TextGrids"
    grids.mkdir(parents=True)
    write_textgrid(story_of("alpha", ALPHA), grids / "alpha.TextGrid")
    write_textgrid(story_of("beta", BETA), grids / "beta.TextGrid", short=True)
    for sub in ("UTS01", "UTS02"):
        touch(root / f"sub-{sub}" / "ses-1" / "func" / f"sub-{sub}_ses-1_task-alpha_bold.nii.gz")
    # beta is presented twice (runs 1 and 2: repeats of the same story).
    for run in ("1", "2"):
        touch(root / "sub-UTS01" / "ses-2" / "func"
              / f"sub-UTS01_ses-2_task-beta_run-{run}_bold.nii.gz")
    return root


def test_lebel_argument_onset(lebel):
    timing = lebel_timing(lebel, onset_s=10.0)
    assert timing.layout == "lebel2023"
    assert timed(timing.stories["alpha"], 0) == ALPHA
    assert timed(timing.stories["beta"], 0) == BETA
    entry = timing.lookup("UTS02", "alpha", None)
    assert entry == RunStimulus(None, "alpha", None, "alpha", 0, 10.0, ARGUMENT_SOURCE)
    assert [(r.run, r.story_run) for r in timing.runs if r.task == "beta"] == [("1", 0),
                                                                               ("2", 0)]
    assert timing.first_volume_s("UTS01", "beta", "02") == -10.0


def test_lebel_events_file_wins_over_argument(lebel, caplog):
    events = write_events(lebel / "sub-UTS01" / "ses-1" / "func"
                          / "sub-UTS01_ses-1_task-alpha_events.tsv",
                          [[7.5, 600, "story"], [9.0, 1, "beep"]],
                          header=("onset", "duration", "trial_type"))
    with caplog.at_level("WARNING", logger="brainalign.stimuli.timing"):
        timing = lebel_timing(lebel, onset_s=10.0)
    # two rows, none naming a stim_file: the first is used, and the warning says so
    assert "2 rows and none names a stim_file" in caplog.text and "line 2" in caplog.text
    own = timing.lookup("UTS01", "alpha", None)
    assert (own.onset_s, own.source) == (7.5, str(events))
    assert timing.lookup("UTS02", "alpha", None).source == ARGUMENT_SOURCE
    # Without onset_s, UTS02's alpha run has no onset.
    with pytest.raises(StimulusTimingError, match=r"sub-UTS02_ses-1_task-alpha_bold.*pass onset_s"):
        lebel_timing(lebel, tasks=["alpha"])


def test_lebel_top_level_events_apply_to_every_subject(lebel):
    events = write_events(lebel / "task-alpha_events.tsv", [[6.0, 600]],
                          header=("onset", "duration"))
    timing = lebel_timing(lebel, tasks="alpha")  # no onset_s needed
    assert [(r.subject, r.run, r.onset_s, r.source) for r in timing.runs] == [
        (None, None, 6.0, str(events))]
    assert timing.first_volume_s("UTS02", "alpha", None) == -6.0


def test_lebel_no_task_found(tmp_path):
    with pytest.raises(StimulusTimingError, match="no task found"):
        lebel_timing(tmp_path, onset_s=10.0)


def test_lebel_missing_onset(lebel):
    with pytest.raises(StimulusTimingError, match="pass onset_s") as err:
        lebel_timing(lebel)
    assert "task-alpha" in str(err.value) and "\n" not in str(err.value)


def test_lebel_story_without_timing_and_tasks_filter(lebel):
    touch(lebel / "sub-UTS03" / "ses-1" / "func" / "sub-UTS03_ses-1_task-gamma_bold.nii.gz")
    with pytest.raises(StimulusTimingError, match="story without timing") as err:
        lebel_timing(lebel, onset_s=10.0)
    assert str(lebel / "derivative" / "TextGrids" / "gamma.TextGrid") in str(err.value)
    timing = lebel_timing(lebel, onset_s=10.0, tasks=["alpha", "beta"])
    assert set(timing.stories) == {"alpha", "beta"}
    with pytest.raises(StimulusTimingError, match="a run without its story.*task-gamma"):
        timing.lookup("UTS03", "gamma", None)


def test_lebel_textgrid_dir_and_dispatcher(lebel, tmp_path):
    other = tmp_path / "grids"
    other.mkdir()
    write_textgrid(story_of("alpha", ALPHA[:2]), other / "alpha.TextGrid")
    timing = read_stimulus_timing("lebel2023", lebel, textgrid_dir=other, onset_s=4,
                                  tasks="alpha")
    assert timing.stories["alpha"].texts == ["so", "there"]
    assert timing.lookup("UTS01", "alpha", None).onset_s == 4.0


# --------------------------------------------------------------------------- Le Petit Prince

SECTIONS = {1: [("Once", 1.0, 1.4), ("when", 1.4, 1.7)],
            2: [("The", 0.8, 0.9), ("planet", 0.9, 1.5)],
            3: [("Then", 2.0, 2.3)]}


@pytest.fixture
def lpp(tmp_path):
    root = tmp_path / "ds003643"
    folder = root / "annotation" / "EN"
    folder.mkdir(parents=True)
    for n, words in SECTIONS.items():
        write_table(story_of("lppEN", words), folder / f"lppEN_section{n}.tsv")
    for sub in ("EN057", "EN058"):
        for run in ("01", "02", "03"):
            touch(root / f"sub-{sub}" / "func" / f"sub-{sub}_task-lppEN_run-{run}_bold.nii.gz")
    return root


def test_lepetitprince_sections_and_argument_onset(lpp):
    timing = lepetitprince_timing(lpp, onset_s=2.0)
    story = timing.stories["lppEN"]
    assert story.n_runs == 3
    for n, words in SECTIONS.items():
        assert timed(story, n - 1) == words
    entry = timing.lookup("EN057", "lppEN", "3")
    assert entry == RunStimulus(None, "lppEN", "03", "lppEN", 2, 2.0, ARGUMENT_SOURCE)
    assert timing.first_volume_s("EN058", "lppEN", "01") == -2.0


def test_lepetitprince_events_and_missing_onset(lpp):
    events = write_events(lpp / "sub-EN057" / "func" / "sub-EN057_task-lppEN_run-02_events.tsv",
                          [[0.0, 1, "trigger", "n/a"], [3.5, 600, "story", "section2.wav"]])
    timing = lepetitprince_timing(lpp, onset_s=2.0)
    own = timing.lookup("EN057", "lppEN", "2")
    assert (own.onset_s, own.story_run, own.source) == (3.5, 1, str(events))
    assert timing.lookup("EN058", "lppEN", "2").onset_s == 2.0
    with pytest.raises(StimulusTimingError, match="pass onset_s"):
        lepetitprince_timing(lpp)
    # EN057 alone: its runs 1 and 3 have no events file and no onset_s is given.
    with pytest.raises(StimulusTimingError, match=r"sub-EN057_task-lppEN_run-01_bold"):
        lepetitprince_timing(lpp, subjects=["EN057"])


def test_lepetitprince_story_without_timing(lpp):
    (lpp / "annotation" / "EN" / "lppEN_section2.tsv").unlink()
    with pytest.raises(StimulusTimingError, match="story without timing") as err:
        lepetitprince_timing(lpp, onset_s=2.0)
    assert str(lpp / "annotation" / "EN" / "lppEN_section2.tsv") in str(err.value)


def test_lepetitprince_run_without_story(lpp):
    timing = lepetitprince_timing(lpp, onset_s=2.0, subjects="EN057")
    with pytest.raises(StimulusTimingError, match=r"a run without its story.*run-4.*lepetitprince"):
        timing.lookup("EN057", "lppEN", "4")
    with pytest.raises(StimulusTimingError, match="task-lppFR"):
        timing.lookup("EN057", "lppFR", "1")


# --------------------------------------------------------------------------- dispatcher


def test_dispatcher_rejects_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="narratives, lebel2023, lepetitprince"):
        read_stimulus_timing("hcp", tmp_path)
    assert TIMING_LAYOUTS == ("narratives", "lebel2023", "lepetitprince")
    with pytest.raises(StimulusTimingError, match="BIDS root not found"):
        read_stimulus_timing("narratives", tmp_path / "absent")


def test_run_stimulus_and_timing_types():
    with pytest.raises(ValueError, match="finite"):
        RunStimulus(None, "t", None, "t", 0, math.nan, ARGUMENT_SOURCE)
    story = story_of("t", [("a", 0.0, 0.5)])
    timing = StimulusTiming("lebel2023", {"t": story},
                            [RunStimulus(None, "t", None, "t", 0, 0.0, ARGUMENT_SOURCE)])
    assert timing.first_volume_s("x", "t", None) == 0.0
    assert math.copysign(1, timing.first_volume_s("x", "t", None)) == 1
    assert issubclass(StimulusTimingError, ValueError)
