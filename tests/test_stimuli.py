"""Story readers and writers: each format on small generated files, and every bad-timing case."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brainalign.stimuli import (Story, StoryFormatError, Word, load_story, write_table,
                                write_textgrid)
from brainalign.stimuli.readers import (DEFAULT_SILENCES, OVERLAP_TOLERANCE_S, read_gentle,
                                        read_table, read_text, read_textgrid)
from brainalign.stimuli.speech import count_syllables, split_transcript, time_transcript

# A hand-written long-format TextGrid: a phone tier first (more intervals than the word
# tier), then the word tier with silences, a doubled quote and a non-ASCII word.
LONG_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 3.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 3.5
        intervals: size = 6
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = "sil"
        intervals [2]:
            xmin = 0.5
            xmax = 0.7
            text = "HH"
        intervals [3]:
            xmin = 0.7
            xmax = 1.2
            text = "AY1"
        intervals [4]:
            xmin = 1.2
            xmax = 2.0
            text = "K"
        intervals [5]:
            xmin = 2.0
            xmax = 3.1
            text = "AE1"
        intervals [6]:
            xmin = 3.1
            xmax = 3.5
            text = ""
    item [2]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 3.5
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 0.5
            text = "sp"
        intervals [2]:
            xmin = 0.5
            xmax = 1.2
            text = """Hi,"""
        intervals [3]:
            xmin = 1.2
            xmax = 2.0
            text = "SIL"
        intervals [4]:
            xmin = 2.0
            xmax = 3.1
            text = "café "
        intervals [5]:
            xmin = 3.1
            xmax = 3.5
            text = ""
'''

# The same TextGrid in Praat's short text format.
SHORT_TEXTGRID = '''File type = "ooTextFile"
Object class = "TextGrid"

0
3.5
<exists>
2
"IntervalTier"
"phones"
0
3.5
6
0
0.5
"sil"
0.5
0.7
"HH"
0.7
1.2
"AY1"
1.2
2.0
"K"
2.0
3.1
"AE1"
3.1
3.5
""
"IntervalTier"
"words"
0
3.5
5
0
0.5
"sp"
0.5
1.2
"""Hi,"""
1.2
2.0
"SIL"
2.0
3.1
"café "
3.1
3.5
""
'''

EXPECTED = (Word('"Hi,"', 0.5, 1.2), Word("café", 2.0, 3.1))


def long_textgrid(tiers: dict[str, list[tuple[float, float, str]]]) -> str:
    """A long-format TextGrid with the given interval tiers (name -> intervals)."""
    end = max(iv[-1][1] for iv in tiers.values())
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0",
             f"xmax = {end}", "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for t, (name, intervals) in enumerate(tiers.items(), start=1):
        lines += [f"    item [{t}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", f"        xmax = {end}",
                  f"        intervals: size = {len(intervals)}"]
        for i, (xmin, xmax, text) in enumerate(intervals, start=1):
            lines += [f"        intervals [{i}]:", f"            xmin = {xmin}",
                      f"            xmax = {xmax}", f'            text = "{text}"']
    return "\n".join(lines) + "\n"


def write(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


# ----------------------------------------------------------------------------- TextGrid


@pytest.mark.parametrize("text, layout", [
    (LONG_TEXTGRID, "long"), (SHORT_TEXTGRID, "short"),
    (LONG_TEXTGRID.replace("\n", "\r\n"), "long"),
    (SHORT_TEXTGRID.replace("ooTextFile", "ooTextFile short", 1), "short"),
])
def test_textgrid_long_and_short_formats(tmp_path, text, layout):
    story = load_story(write(tmp_path, "demo.TextGrid", text))
    assert story.words == EXPECTED
    assert story.name == "demo"
    assert story.metadata["format"] == f"textgrid-{layout}"
    assert story.metadata["tier"] == "words"
    assert story.metadata["n_silences_skipped"] == 3


def test_textgrid_utf16_as_praat_saves_non_ascii(tmp_path):
    story = read_textgrid(write(tmp_path, "u.TextGrid", LONG_TEXTGRID, encoding="utf-16"))
    assert story.words == EXPECTED


def test_textgrid_tier_by_name_and_configurable_silences(tmp_path):
    path = write(tmp_path, "demo.TextGrid", LONG_TEXTGRID)
    phones = read_textgrid(path, tier="PHONES")  # case-insensitive fallback
    assert phones.texts == ["HH", "AY1", "K", "AE1"]
    kept = read_textgrid(path, silences=["sp", ""])
    assert kept.texts == ['"Hi,"', "SIL", "café"]
    with pytest.raises(StoryFormatError, match=r"no interval tier named 'syllables'.*"
                       r"'phones' \(IntervalTier, 6 intervals\).*'words'"):
        read_textgrid(path, tier="syllables")


def test_textgrid_tier_heuristics(tmp_path):
    words = [(0, 1, "sp"), (1, 2, "one"), (2, 3, "two")]
    phones = [(0, 1, "sil"), (1, 1.5, "W"), (1.5, 2, "AH1"), (2, 2.5, "T"), (2.5, 3, "UW1")]
    # A tier named like words wins over a tier with more intervals, MFA's naming included.
    for name in ("word", "Words", "wrd", "speaker1 - words"):
        path = write(tmp_path, "a.TextGrid", long_textgrid({"phones": phones, name: words}))
        assert read_textgrid(path).texts == ["one", "two"], name
    # No such name: never a phone-like tier (it has the most intervals), and two or more
    # other tiers with words are an error asking for tier=.
    path = write(tmp_path, "b.TextGrid", long_textgrid({"transcript": words, "segments": phones}))
    story = read_textgrid(path)
    assert story.metadata["tier"] == "transcript" and story.texts == ["one", "two"]
    path = write(tmp_path, "b2.TextGrid", long_textgrid({"Orthography": words, "phones": phones}))
    assert read_textgrid(path).texts == ["one", "two"]
    notes = [(0, 1.5, "note"), (1.5, 3, "")]
    path = write(tmp_path, "b3.TextGrid", long_textgrid({"notes": notes, "transcript": words,
                                                         "segments": phones}))
    with pytest.raises(StoryFormatError, match=r"ambiguous tiers.*'notes'.*'transcript'.*"
                       r"pass tier=NAME"):
        read_textgrid(path)
    assert read_textgrid(path, tier="transcript").texts == ["one", "two"]
    # Only silence anywhere: an error listing the tiers.
    silent = [(0, 1, "sp"), (1, 3, "")]
    path = write(tmp_path, "c.TextGrid", long_textgrid({"a": silent, "b": silent}))
    with pytest.raises(StoryFormatError, match=r"missing tier.*'a' \(IntervalTier, 2 "
                       r"intervals\), 'b'"):
        read_textgrid(path)


def test_textgrid_point_tiers_are_not_word_tiers(tmp_path):
    text = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 2
tiers? <exists>
size = 1
item []:
    item [1]:
        class = "TextTier"
        name = "words"
        xmin = 0
        xmax = 2
        points: size = 1
        points [1]:
            number = 0.5
            mark = "hi"
'''
    with pytest.raises(StoryFormatError, match=r"missing tier.*'words' \(TextTier"):
        read_textgrid(write(tmp_path, "p.TextGrid", text))


def interval_line(k: int, tier_offset: int = 0) -> int:
    """Line of interval k's xmin in a one-tier file from long_textgrid()."""
    return 16 + 4 * (k - 1) + tier_offset


@pytest.mark.parametrize("intervals, bad, why", [
    ([(0, 1, "a"), (-0.5, 2, "b"), (2, 3, "c")], 2, "negative time"),
    ([(0, 1, "a"), (1, 2, "b"), (1.5, 2.5, "c")], 3, "overlapping words"),
    ([(0, 1, "a"), (2, 1.5, "b"), (3, 4, "c")], 2, "offset before onset"),
    ([(0, 1, "a"), (1, 2, "b"), (0.5, 0.8, "c")], 3, "decreasing onsets"),
])
def test_textgrid_bad_timing_names_line_and_interval(tmp_path, intervals, bad, why):
    path = write(tmp_path, "bad.TextGrid", long_textgrid({"words": intervals}))
    with pytest.raises(StoryFormatError) as err:
        read_textgrid(path)
    message = str(err.value)
    assert str(path) in message
    assert f"line {interval_line(bad)} " in message
    assert f"interval {bad})" in message
    assert why in message
    assert path.read_text().splitlines()[interval_line(bad) - 1].strip().startswith("xmin")


def test_textgrid_bad_timing_in_short_format(tmp_path):
    text = SHORT_TEXTGRID.replace("2.0\n3.1\n\"café \"", "1.9\n3.1\n\"café \"")
    with pytest.raises(StoryFormatError, match=r"line 45 \(tier 'words', interval 4\): "
                       r"overlapping words: 'café ' starts at 1.9 s"):
        read_textgrid(write(tmp_path, "s.TextGrid", text))


def test_textgrid_overlap_tolerance(tmp_path):
    small = OVERLAP_TOLERANCE_S / 2
    ok = [(0, 1.0, "a"), (1.0 - small, 2, "b")]
    story = read_textgrid(write(tmp_path, "ok.TextGrid", long_textgrid({"words": ok})))
    assert story.words[1].onset_s == 1.0 - small  # kept exactly as written
    too_much = [(0, 1.0, "a"), (1.0 - 2 * OVERLAP_TOLERANCE_S, 2, "b")]
    path = write(tmp_path, "bad.TextGrid", long_textgrid({"words": too_much}))
    with pytest.raises(StoryFormatError, match="interval 2"):
        read_textgrid(path)
    assert read_textgrid(path, tolerance_s=0.01).texts == ["a", "b"]


@pytest.mark.parametrize("edit, line, why", [
    (lambda t: t.replace("xmax = 2\n", "xmax = two\n", 1), None, "malformed line 'xmax = two'"),
    (lambda t: t.replace('text = "b"', "text = b"), None, "malformed line 'text = b'"),
    (lambda t: t.replace("xmin = 1\n", "xmin = 1.0.0\n", 1), None, "malformed line"),
    (lambda t: t.replace("intervals: size = 3", "intervals: size = 4"), 26, "file ends early"),
    (lambda t: t.replace('size = 1\n', 'size = 1.5\n'), 7, "a count >= 0"),
    (lambda t: t.replace('            text = "b"', '            xmax = 3'), 22,
     "expected 'text = ...'"),
])
def test_textgrid_malformed_lines(tmp_path, edit, line, why):
    text = long_textgrid({"words": [(0, 1, "a"), (1, 2, "b"), (2, 3, "c")]})
    edited = edit(text)
    assert edited != text
    if line is None:  # the first line that differs
        line = next(i for i, (a, b) in enumerate(zip(text.splitlines(), edited.splitlines()),
                                                 start=1) if a != b)
    with pytest.raises(StoryFormatError) as err:
        read_textgrid(write(tmp_path, "m.TextGrid", edited))
    assert f"line {line}" in str(err.value)
    assert why in str(err.value)


@pytest.mark.parametrize("text, why", [
    ("", "file is empty"),
    ("   \n\n", "file is empty"),
    ('File type = "ooTextFile"\nObject class = "Sound"\n', "not a TextGrid"),
    ("word onset offset\n", "line 1: malformed line 'word onset offset'"),
    ('"hello"\n"TextGrid"\n', "not a Praat text file"),
    ("ooBinaryFile\x08TextGrid\x00\xff", "binary TextGrid"),
    ('File type = "ooBinaryFile"\n', "binary TextGrid"),
    ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1\n'
     "tiers? <absent>\n", "the TextGrid has no tiers"),
])
def test_textgrid_not_readable(tmp_path, text, why):
    with pytest.raises(StoryFormatError, match=re.escape(why)):
        read_textgrid(write(tmp_path, "x.TextGrid", text))


# ----------------------------------------------------------------------------- Gentle


def gentle_document() -> dict:
    def ok(word, start, end):
        return {"word": word, "case": "success", "alignedWord": word.lower(), "start": start,
                "end": end, "phones": []}

    def lost(word):
        return {"word": word, "case": "not-found-in-audio", "startOffset": 0, "endOffset": 0}

    return {"transcript": "So the lighthouse keeper waved at the ferry again",
            "words": [lost("So"), ok("the", 1.0, 1.2), ok("lighthouse", 1.2, 1.8),
                      lost("keeper"), lost("waved"), ok("at", 2.4, 2.5),
                      {"word": "uh", "case": "not-found-in-transcript", "start": 2.5,
                       "end": 2.6},
                      ok("the", 2.6, 2.7), ok("ferry", 2.7, 3.1), lost("again")]}


def test_gentle_interpolates_unaligned_words_and_flags_them(tmp_path, caplog):
    path = write(tmp_path, "g.json", json.dumps(gentle_document()))
    with caplog.at_level("WARNING", logger="brainalign.stimuli.readers"):
        story = load_story(path)
    assert "4 of 9 words (44.4%) were not aligned" in caplog.text
    assert story.texts == ["So", "the", "lighthouse", "keeper", "waved", "at", "the", "ferry",
                           "again"]
    assert story.metadata["interpolated_words"] == [0, 3, 4, 8]
    assert story.metadata["skipped_entries"] == 1
    times = [(w.onset_s, w.offset_s) for w in story.words]
    median = 0.2  # of the aligned durations 0.2, 0.6, 0.1, 0.1, 0.4
    assert times[0] == pytest.approx((1.0 - median, 1.0))
    assert times[1:3] == [(1.0, 1.2), (1.2, 1.8)]
    assert times[3] == pytest.approx((1.8, 2.1))  # the 0.6 s gap shared by two words
    assert times[4] == pytest.approx((2.1, 2.4))
    assert times[5:8] == [(2.4, 2.5), (2.6, 2.7), (2.7, 3.1)]
    assert times[8] == pytest.approx((3.1, 3.1 + median))


def test_gentle_unaligned_word_between_slightly_overlapping_neighbours(tmp_path):
    document = {"words": [{"word": "a", "case": "success", "start": 0.0, "end": 1.0},
                          {"word": "b", "case": "not-found-in-audio"},
                          {"word": "c", "case": "success", "start": 0.9995, "end": 2.0}]}
    story = read_gentle(write(tmp_path, "g.json", json.dumps(document)))
    assert story.words[1] == Word("b", 0.9995, 0.9995)
    assert story.metadata["interpolated_words"] == [1]


@pytest.mark.parametrize("edit, why", [
    (lambda d: d["words"].__setitem__(5, {**d["words"][5], "start": 1.5, "end": 1.7}),
     "entry 6 of 'words': overlapping words"),
    (lambda d: d["words"].__setitem__(5, {**d["words"][5], "start": 0.5, "end": 0.7}),
     "entry 6 of 'words': decreasing onsets"),
    (lambda d: d["words"].__setitem__(1, {**d["words"][1], "start": -1.0}),
     "entry 2 of 'words': negative time"),
    (lambda d: d["words"].__setitem__(2, {**d["words"][2], "end": 1.1}),
     "entry 3 of 'words': offset before onset"),
    (lambda d: d["words"].__setitem__(2, {"case": "success"}), "entry 3 of 'words': malformed"),
    (lambda d: d.__setitem__("words", [{"word": "a", "case": "not-found-in-audio"}]),
     "none of the 1 words was aligned"),
    (lambda d: d.pop("words"), '"words" list'),
])
def test_gentle_errors(tmp_path, edit, why):
    document = gentle_document()
    edit(document)
    with pytest.raises(StoryFormatError, match=re.escape(why)):
        read_gentle(write(tmp_path, "g.json", json.dumps(document)))


def test_gentle_malformed_json_names_line(tmp_path):
    text = json.dumps(gentle_document(), indent=1).replace('"case": "success"', '"case" "x"', 1)
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if '"case" "x"' in t)
    with pytest.raises(StoryFormatError, match=f"line {line}: malformed JSON"):
        read_gentle(write(tmp_path, "g.json", text))


# ----------------------------------------------------------------------------- TSV / CSV


@pytest.mark.parametrize("labels, refused", [(["2", "1"], True), (["run-02", "run-01"], True),
                                              (["run-01", "run-02"], False),
                                              (["b", "a"], False)])
def test_numbered_runs_out_of_order_are_refused(tmp_path, labels, refused):
    """Runs are taken in the order they appear; numbered ones listed 2 before 1 would pair
    each run's words with the other run's scan, so they are an error. Named runs keep their
    order of appearance."""
    path = tmp_path / "t.tsv"
    path.write_text("word\tonset\toffset\trun\n"
                    f"a\t0.1\t0.4\t{labels[0]}\nb\t0.5\t0.9\t{labels[0]}\n"
                    f"c\t0.2\t0.6\t{labels[1]}\n")
    if refused:
        with pytest.raises(StoryFormatError, match="out of order"):
            read_table(path)
    else:
        story = read_table(path)
        assert story.metadata["run_labels"] == labels and story.words[-1].run == 1


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_table_tsv_with_run_column(tmp_path, newline):
    text = ("extra\trun\toffset\tword\tonset\n"
            "x\t1\t0.5\t\"Well,\t0.1\n"
            "x\t1\t0.9\tsp\t0.5\n"
            "\n"
            "x\t1\t1.25\tit's\t0.9\n"
            "x\t2\t0.75\tcafé\t0.25\n").replace("\n", newline)
    path = tmp_path / "t.tsv"
    path.write_bytes(text.encode("utf-8"))
    story = load_story(path)
    assert story.words == (Word('"Well,', 0.1, 0.5, 0), Word("it's", 0.9, 1.25, 0),
                           Word("café", 0.25, 0.75, 1))
    assert story.metadata["run_labels"] == ["1", "2"]
    assert story.metadata["n_silences_skipped"] == 1
    assert story.n_runs == 2


@pytest.mark.parametrize("delimiter", [",", ";"])
def test_table_csv_quoting_and_sniffed_delimiter(tmp_path, delimiter):
    d = delimiter
    text = (f"Word{d}Start{d}End\n"
            f'"Hello{d} she said"{d}0{d}0.5\n'
            f'"""Yes."""{d}0.5{d}0.75\n')
    story = load_story(write(tmp_path, "t.csv", text))
    assert story.words == (Word(f"Hello{d} she said", 0.0, 0.5), Word('"Yes."', 0.5, 0.75))


@pytest.mark.parametrize("rows, line, why", [
    (["a\t0\t0.5", "", "b\t0.4\t0.6"], 4, "overlapping words"),
    (["a\t0\t0.5", "b\t0.6\t0.55"], 3, "offset before onset"),
    (["a\t-0.1\t0.5"], 2, "negative time"),
    (["a\t1\t1.5", "b\t0.5\t0.6"], 3, "decreasing onsets"),
    (["a\t0\t0.5", "b\tsoon\t0.9"], 3, "malformed line: onset and offset must be numbers"),
    (["a\t0\t0.5", "b\t0.6"], 3, "malformed line: 2 cell(s)"),
    (["a\t0\tnan"], 2, "not a finite number"),
])
def test_table_errors_name_the_line(tmp_path, rows, line, why):
    path = write(tmp_path, "t.tsv", "\n".join(["word\tonset\toffset", *rows]) + "\n")
    with pytest.raises(StoryFormatError) as err:
        read_table(path)
    assert f"{path}: line {line}: " in str(err.value)
    assert why in str(err.value)


def test_table_header_errors(tmp_path):
    with pytest.raises(StoryFormatError, match=r"line 1: header has no offset column"):
        read_table(write(tmp_path, "t.tsv", "word\tonset\tduration\na\t0\t1\n"))
    with pytest.raises(StoryFormatError, match=r"line 1: header needs"):
        read_table(write(tmp_path, "t.tsv", "a 0 1\n"))
    with pytest.raises(StoryFormatError, match="file is empty"):
        read_table(write(tmp_path, "t.tsv", ""))
    with pytest.raises(StoryFormatError, match=r"line 4: run goes back from run 1 to run 0"):
        read_table(write(tmp_path, "t.tsv", "word\tonset\toffset\trun\na\t0\t1\t1\n"
                         "b\t0\t1\t2\nc\t2\t3\t1\n"))
    with pytest.raises(StoryFormatError, match="only silence"):
        read_table(write(tmp_path, "t.tsv", "word\tonset\toffset\nsp\t0\t1\n"))


# ----------------------------------------------------------------------------- text + rate


def test_text_with_words_per_second(tmp_path):
    path = write(tmp_path, "t.txt", "One two,\nthree. Four")
    story = load_story(path, words_per_s=2.0)
    assert story.words == (Word("One", 0.0, 0.5), Word("two,", 0.5, 1.0),
                           Word("three.", 1.0, 1.5), Word("Four", 1.5, 2.0))
    paused = load_story(path, words_per_s=2.0, clause_pause_s=0.25, sentence_pause_s=1.0,
                        lead_in_s=10.0)
    assert [(w.onset_s, w.offset_s) for w in paused.words] == [
        (10.0, 10.5), (10.5, 11.0), (11.25, 11.75), (12.75, 13.25)]
    assert paused.metadata["speech_model"]["sentence_pause_s"] == 1.0


def test_text_with_syllable_rate(tmp_path):
    path = write(tmp_path, "t.txt", '"Little café," she said! Then: 42 well-known boats.')
    story = load_story(path, syllables_per_s=4.0, sentence_pause_s=0.5, clause_pause_s=0.2)
    # syllables: Little 2, café 2, she 1, said 1, Then 1, 42 3, well-known 2, boats 1
    durations = [round(w.offset_s - w.onset_s, 6) for w in story.words]
    assert durations == [0.5, 0.5, 0.25, 0.25, 0.25, 0.75, 0.5, 0.25]
    onsets = [w.onset_s for w in story.words]
    # pauses: after 'café,"' 0.2 (closing quote), after 'said!' 0.5, after 'Then:' 0.2
    assert onsets == [0.0, 0.5, 1.2, 1.45, 2.2, 2.65, 3.4, 3.9]


def test_text_needs_a_rate(tmp_path):
    path = write(tmp_path, "t.txt", "some words")
    with pytest.raises(TypeError, match="words_per_s=... or syllables_per_s"):
        load_story(path)
    with pytest.raises(ValueError, match="exactly one speech rate"):
        read_text(path, words_per_s=2, syllables_per_s=4)
    with pytest.raises(StoryFormatError, match="holds no words"):
        read_text(write(tmp_path, "p.txt", "-- ..."), words_per_s=2)


@pytest.mark.parametrize("word, n", [
    ("the", 1), ("a", 1), ("little", 2), ("jumped", 1), ("wanted", 2), ("makes", 1),
    ("boxes", 2), ("lighthouse", 2), ("beautiful", 3), ("everyone", 3), ("café", 2),
    ("naïve", 2), ("Zoë", 2), ("twenty-three", 3), ("1961", 6), ("42", 3), ("9th", 2),
    ("rhythm", 1), ("Tomás,", 2), ('"Hello,', 2),
])
def test_count_syllables(word, n):
    assert count_syllables(word) == n


def test_split_transcript_keeps_every_character():
    text = '— "Stop" — she said ... then left.'
    words = split_transcript(text)
    assert words == ['— "Stop" —', "she", "said ...", "then", "left."]
    assert "".join(words).replace(" ", "") == text.replace(" ", "")


def test_time_transcript_rounds_without_drift():
    words = time_transcript("a " * 1000, words_per_s=3.0)
    assert words[-1].offset_s == 333.333
    assert all(a.offset_s == b.onset_s for a, b in zip(words, words[1:]))


# ----------------------------------------------------------------------------- dispatcher


def test_load_story_several_files_are_runs(tmp_path):
    grid = write(tmp_path, "tale_run-1.TextGrid", LONG_TEXTGRID)
    gentle = write(tmp_path, "tale_run-2.json", json.dumps(gentle_document()))
    table = write(tmp_path, "tale_run-3.tsv", "word\tonset\toffset\trun\na\t0\t1\t0\n"
                  "b\t0\t1\t1\n")
    story = load_story([grid, gentle, table])
    assert story.name == "tale"
    assert story.n_runs == 4
    assert [w.run for w in story.words] == [0] * 2 + [1] * 9 + [2, 3]
    assert story.words[:2] == EXPECTED
    assert [story.texts[i] for i in story.metadata["interpolated_words"]] == [
        "So", "keeper", "waved", "again"]
    assert story.metadata["interpolated_words"] == [2, 5, 6, 10]
    assert story.metadata["files"] == [str(grid), str(gentle), str(table)]
    json.dumps(story.metadata)  # metadata must stay JSON-serialisable (provenance)
    assert load_story([grid, grid], name="twice").name == "twice"


def test_load_story_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="story file not found"):
        load_story(tmp_path / "nope.TextGrid")
    with pytest.raises(StoryFormatError, match=r"unknown story format '\.wav'"):
        load_story(write(tmp_path, "a.wav", "x"))
    with pytest.raises(ValueError, match="at least one path"):
        load_story([])


def test_default_silences_are_not_english_words():
    assert {"silence", "pause", "uh"}.isdisjoint(DEFAULT_SILENCES)
    assert {"", "sp", "sil", "<sil>"} <= DEFAULT_SILENCES


def test_noise_and_sentence_labels_of_the_huth_textgrids_are_not_words(tmp_path):
    """LeBel et al. (2023) TextGrids mark breaths, coughs and sentence boundaries as
    intervals; none of them is a word of the story (nor Kaldi's bracketed noises)."""
    intervals = [(0, 0.5, "{BR}"), (0.5, 1, "so"), (1, 1.2, "{CG}"), (1.2, 1.5, "i"),
                 (1.5, 1.6, "{LS}"), (1.6, 1.7, "{IG}"), (1.7, 2, "went"),
                 (2, 2.1, "sentence_end"), (2.1, 2.2, "sentence_start"), (2.2, 2.4, "[noise]"),
                 (2.4, 2.6, "home")]
    path = write(tmp_path, "lebel.TextGrid", long_textgrid({"word": intervals}))
    story = read_textgrid(path)
    assert story.texts == ["so", "i", "went", "home"]
    assert [w.onset_s for w in story.words] == [0.5, 1.2, 1.7, 2.4]


# ----------------------------------------------------------------------------- round trips


def test_textgrid_story_tsv_round_trip(tmp_path):
    intervals = [(0, 0.3125, "sp"), (0.3125, 0.71, "Alice"), (0.71, 1.1, "was"),
                 (1.1, 1.3, ""), (1.3, 1.9000000000000001, "beginning"),
                 (1.9000000000000001, 2.25, "to")]
    story = read_textgrid(write(tmp_path, "a.TextGrid", long_textgrid({"word": intervals})))
    table = read_table(write_table(story, tmp_path / "a.tsv"))
    assert table.words == story.words
    assert table.texts == ["Alice", "was", "beginning", "to"]
    row = (tmp_path / "a.tsv").read_text().splitlines()[3]
    assert row == "beginning\t1.3\t1.9000000000000001\t0"
    csv_story = read_table(write_table(story, tmp_path / "a.csv", delimiter=","))
    assert csv_story.words == story.words



def test_table_round_trip_keeps_a_run_without_words(tmp_path):
    """Words in runs 0 and 2 (run 1 silent) come back in runs 0 and 2, not 0 and 1."""
    story = Story("s", (Word("a", 1.0, 1.5, 0), Word("b", 2.0, 2.5, 0), Word("c", 0.5, 1.0, 2)))
    for delimiter, name in (("\t", "s.tsv"), (",", "s.csv")):
        back = read_table(write_table(story, tmp_path / name, delimiter=delimiter))
        assert back.words == story.words
    (tmp_path / "bad.tsv").write_text("word\tonset\toffset\trun_index\na\t1\t2\tone\n")
    with pytest.raises(StoryFormatError, match="run_index must be a 0-based integer, found 'one'"):
        read_table(tmp_path / "bad.tsv")

@pytest.mark.parametrize("short", [False, True])
def test_write_textgrid_reads_back(tmp_path, short):
    story = Story("s", (Word('"Oh,', 1.5, 2.0, 0), Word("café", 2.0, 2.25, 0),
                        Word("b", 0.5, 1.0, 1))).with_scan(2.0, (3, 2), first_volume_s=(1.0, 0.0))
    path = write_textgrid(story, tmp_path / "s.TextGrid", short=short)
    back = read_textgrid(path)
    assert back.words == story.words[:2]
    assert back.metadata["format"] == ("textgrid-short" if short else "textgrid-long")
    # gaps became empty intervals up to the scan's end (first volume at 1 s + 3 x 2 s)
    assert read_textgrid(path, silences=[]).texts == ["", '"Oh,', "café", ""]
    assert read_textgrid(path, silences=[]).words[-1].offset_s == 7.0
    assert read_textgrid(write_textgrid(story, tmp_path / "r.TextGrid", run=1)).words == (
        Word("b", 0.5, 1.0, 0),)


WORD_TEXTS = st.sampled_from(['"Hi,', "it's", "café", "well-known", "42", "naïve.", "a;b",
                              'say "no"', "x,y", "Zoë!", "—"])


@st.composite
def stories(draw):
    """Random stories with 1-3 runs, gaps or no gaps, float times of any precision."""
    words = []
    for run in range(draw(st.integers(1, 3))):
        clock = draw(st.floats(0, 30))
        for _ in range(draw(st.integers(1, 8))):
            clock += draw(st.sampled_from([0.0, draw(st.floats(0.001, 2.0))]))
            duration = draw(st.floats(0.0, 1.5))
            words.append(Word(draw(WORD_TEXTS), clock, clock + duration, run))
            clock += duration
    return Story("random", tuple(words))


@settings(max_examples=40, deadline=None)
@given(story=stories())
def test_round_trips_through_every_writer(tmp_path_factory, story):
    folder = tmp_path_factory.mktemp("rt")
    assert read_table(write_table(story, folder / "s.tsv")).words == story.words
    assert read_table(write_table(story, folder / "s.csv", delimiter=",")).words == story.words
    grids = [write_textgrid(story, folder / f"r{run}.TextGrid", run=run, short=run % 2 == 1)
             for run in range(story.n_runs)]
    assert load_story(grids).words == story.words


def test_a_word_spelled_like_a_silence_label_is_refused_by_the_writers(tmp_path):
    """Gentle keeps a transcript word "#"; the table and TextGrid readers skip "#" rows as
    silence, so writing it used to lose the word on the way back. The writers refuse it;
    an aligner's table still has its "#" rows skipped."""
    document = gentle_document()
    document["words"][5] = {"word": "#", "case": "success", "alignedWord": "#",
                            "start": 2.4, "end": 2.5, "phones": []}
    story = load_story(write(tmp_path, "g.json", json.dumps(document)))
    assert "#" in story.texts
    for writer, name in ((write_table, "g.tsv"), (write_textgrid, "g.TextGrid")):
        with pytest.raises(ValueError, match=r"spelled like silence labels \(\['#'\]\)"):
            writer(story, tmp_path / name)
        assert not (tmp_path / name).exists()
    aligner = write(tmp_path, "mfa.tsv", "word\tonset\toffset\trun_index\n#\t0.0\t0.5\t0\n"
                                         "hi\t0.5\t0.9\t0\n")
    assert read_table(aligner).texts == ["hi"]
    assert read_table(aligner, silences=[]).texts == ["#", "hi"]


def test_csv_round_trip_keeps_a_newline_inside_a_quoted_word(tmp_path):
    story = Story("s", (Word("two\nlines", 0.5, 1.0, 0), Word("b", 1.0, 1.5, 0),
                        Word("c", 2.0, 2.5, 0)))
    path = write_table(story, tmp_path / "s.csv", delimiter=",")
    assert read_table(path).words == story.words
    # an error after the quoted cell still names its physical line (the header is line 1)
    path.write_text(path.read_text().replace("2.0,2.5", "x,2.5"))
    with pytest.raises(StoryFormatError, match="line 5"):
        read_table(path)


def test_run_summary():
    story = Story("s", (Word("a", 1.0, 1.5, 0), Word("b", 2.0, 3.0, 0), Word("c", 0.5, 0.5, 1)),
                  tr_s=2.0, n_volumes=(4, 3), first_volume_s=(0.0, 1.0))
    assert story.run_summary() == [
        {"run": 0, "n_words": 2, "first_onset_s": 1.0, "last_offset_s": 3.0, "speech_s": 2.0,
         "words_per_s": 1.0, "n_volumes": 4, "scan_s": 8.0, "first_volume_s": 0.0,
         "scan_end_s": 8.0, "n_outside_scan": 0},
        {"run": 1, "n_words": 1, "first_onset_s": 0.5, "last_offset_s": 0.5, "speech_s": 0.0,
         "words_per_s": None, "n_volumes": 3, "scan_s": 6.0, "first_volume_s": 1.0,
         "scan_end_s": 7.0, "n_outside_scan": 1}]
    row = Story("t", (Word("a", 0, 1),)).run_summary()[0]
    assert row["scan_s"] is None and row["scan_end_s"] is None and row["n_outside_scan"] is None


def alice_like_story():
    """Words from 20.06 s to 743.3 s, as in the Alice TextGrid (first kept volume at 20 s)."""
    onsets = [20.06 + 0.34 * i for i in range(2127)]
    return Story("alice", tuple(Word(f"w{i}", t, t + 0.3, 0) for i, t in enumerate(onsets)))


def test_with_scan_attaches_the_first_volume_time_per_run():
    story = Story("s", (Word("a", 5.0, 5.5, 0), Word("b", 21.0, 21.5, 1)))
    scanned = story.with_scan(2.0, [10, 5], first_volume_s=[0.0, 20.0])
    assert scanned.first_volume_s == (0.0, 20.0) and scanned.n_volumes == (10, 5)
    assert scanned.has_scan and not story.has_scan
    assert story.with_scan(2.0, [10, 12], first_volume_s=0).first_volume_s == (0.0, 0.0)
    with pytest.raises(TypeError, match="first_volume_s"):
        story.with_scan(2.0, [10, 5])  # no default: a wrong onset shifts every feature
    with pytest.raises(ValueError, match=r"first_volume_s has 3 entries but the words span 2"):
        story.with_scan(2.0, [10, 5], first_volume_s=[0.0, 0.0, 0.0])
    # a list is one entry per run: [20.0] for two runs is an error, not 20 s for both
    with pytest.raises(ValueError, match=r"first_volume_s has 1 entries but the words span 2"):
        story.with_scan(2.0, [10, 5], first_volume_s=[20.0])


def test_with_scan_rejects_words_outside_the_scan_naming_run_last_word_and_scan_end():
    story = alice_like_story()
    assert story.with_scan(2.0, [362], first_volume_s=20.0).run_summary()[0]["scan_end_s"] == 744.0
    # the scan stamped from 0 s (the first 10 volumes forgotten) ends 20 s before the words
    with pytest.raises(ValueError) as err:
        story.with_scan(2.0, [362], first_volume_s=0.0)
    message = str(err.value)
    assert "run 0: 57 of 2127 word(s) outside the scan" in message
    assert "words 20.060 .. 743.200 s, scan 0.000 .. 724.000 s (362 volumes of 2 s)" in message
    assert "allow_words_outside_scan=True" in message
    # a scan that starts late leaves the first words before the first volume
    with pytest.raises(ValueError, match=r"run 0: 59 of 2127 word\(s\) outside the scan: "
                       r"words 20.060 .. 743.200 s, scan 40.000 .. 764.000 s"):
        story.with_scan(2.0, [362], first_volume_s=40.0)


def test_words_outside_the_scan_pass_only_when_allowed(caplog):
    story = alice_like_story()
    with caplog.at_level("WARNING", logger="brainalign.stimuli.story"):
        shifted = story.with_scan(2.0, [362], first_volume_s=0.0, allow_words_outside_scan=True)
    assert shifted.run_summary()[0]["n_outside_scan"] == 57
    assert "57 of 2127 word(s) outside the scan" in caplog.text
    with pytest.raises(ValueError, match="outside the scan"):
        shifted.check_scan()


def test_check_scan_names_what_is_missing():
    legacy = Story("s", (Word("a", 0.0, 1.0, 0),), tr_s=2.0, n_volumes=(4,))
    with pytest.raises(ValueError, match=r"story 's' has no complete scan timing \(missing "
                       r"first_volume_s\).*with_scan\(tr_s, n_volumes, first_volume_s=\.\.\.\)"):
        legacy.check_scan()
    with pytest.raises(ValueError, match=r"missing tr_s, n_volumes, first_volume_s"):
        Story("s", (Word("a", 0.0, 1.0, 0),)).check_scan()


def test_textgrid_text_may_hold_brackets_comment_marks_and_numbers(tmp_path):
    intervals = [(0, 1, "wow! [laugh]"), (1, 2, "3.5"), (2, 3, "xmin = 2"),
                 (3, 4, 'say ""no""')]
    story = read_textgrid(write(tmp_path, "t.TextGrid", long_textgrid({"words": intervals})))
    assert story.texts == ["wow! [laugh]", "3.5", "xmin = 2", 'say "no"']
    unterminated = long_textgrid({"words": intervals}).replace('"3.5"', '"3.5')
    with pytest.raises(StoryFormatError, match=r"line 26: expected 'xmin = \.\.\.'.*\(the "
                       r"text that starts on line 22 runs over several lines"):
        read_textgrid(write(tmp_path, "u.TextGrid", unterminated))
