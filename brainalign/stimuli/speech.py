"""A deterministic speech-rate model: word timings for a transcript that has no audio.

When only the text of a story is known, brainalign times its words with a stated speech
rate, either a fixed number of words per second or a number of syllables per second
(a word lasts ``n_syllables / syllables_per_s``), with optional silent pauses after
clause punctuation (``, ; :``) and sentence ends (``. ! ?``, also before closing quotes)
and a silent lead-in before the first word. The same text and settings always give the
same times, rounded to the millisecond.

This is a model, not an alignment: real speech varies its rate, lengthens phrase-final
words and pauses where the punctuation does not say so. Syllables are counted by an
English spelling heuristic (:func:`count_syllables`). Pure Python; nothing here comes
from a library because no well-kept package times text without audio.
"""

from __future__ import annotations

import re
import unicodedata

from brainalign.stimuli.story import Word

#: Vowel letters (after accents are stripped) whose runs make up syllable nuclei.
_VOWEL_RUN = re.compile(r"[aeiouy]+")
#: Trailing characters that may follow sentence-final punctuation ("Stop!" she said).
_CLOSERS = "\"'”’)]»"


def split_transcript(text: str) -> list[str]:
    """Split a transcript into words on whitespace, punctuation attached.

    A token holding no letter or digit (a free-standing dash or quote) is joined to the
    word before it (or to the first word, when it opens the text), so no character of
    the transcript is lost.

    Parameters
    ----------
    text : str
        The transcript.

    Returns
    -------
    list of str
        The words, in order.
    """
    words: list[str] = []
    pending = ""
    for token in text.split():
        if not any(ch.isalnum() for ch in token):
            if words:
                words[-1] = f"{words[-1]} {token}"
            else:
                pending = f"{pending}{token} "
            continue
        words.append(pending + token)
        pending = ""
    if pending and words:
        words[-1] = f"{words[-1]} {pending.strip()}"
    return words


def count_syllables(word: str) -> int:
    """Estimate the number of spoken syllables of an English word from its spelling.

    Counts runs of vowel letters (accents stripped, ``y`` counts as a vowel, a diaeresis
    starts a new run as in "naïve"), then drops a silent final ``e`` (not in ``-le``), a
    silent ``-ed`` (not after ``t``/``d``) and a silent ``-es`` (not after a sibilant); an
    accented final ``é`` is spoken ("café"). A hyphenated word is the sum of its parts.
    Digits count 1.5 syllables each, rounded ("42" -> 3, as in "forty-two"), a rough
    spoken length.
    Every word counts at least 1.

    Parameters
    ----------
    word : str
        One word; punctuation is ignored.

    Returns
    -------
    int
        The estimated syllable count, >= 1.
    """
    if "-" in word.strip("-"):
        return sum(count_syllables(part) for part in word.split("-") if part.strip())
    n_digits = sum(ch.isdigit() for ch in word)
    folded = "".join(ch for ch in word.casefold() if ch.isalpha())
    # A diaeresis starts a new syllable (naïve, Zoë); an accented final e is spoken (café).
    spoken_final_e = re.search("[éë]s?$", folded) is not None
    folded = re.sub("[äëïöü]", lambda m: "|" + m.group(0), folded)
    plain = unicodedata.normalize("NFKD", folded)
    letters = "".join(ch for ch in plain if "a" <= ch <= "z" or ch == "|")
    n = len(_VOWEL_RUN.findall(letters))
    if n > 1 and not spoken_final_e:
        if letters.endswith("e") and not letters.endswith(("le", "ee", "ye")):
            n -= 1
        elif letters.endswith("ed") and not letters.endswith(("ted", "ded")):
            n -= 1
        elif letters.endswith("es") and not letters.endswith(("ses", "xes", "zes", "ches",
                                                              "shes", "ges", "ces")):
            n -= 1
    n += round(1.5 * n_digits)
    return max(1, n)


def pause_after(word: str, sentence_pause_s: float, clause_pause_s: float) -> float:
    """The silence that follows a word, from its final punctuation, in seconds."""
    core = word.rstrip(_CLOSERS)
    if core.endswith((".", "!", "?", "…")):
        return sentence_pause_s
    if core.endswith((",", ";", ":", "—", "–")):
        return clause_pause_s
    return 0.0


def time_transcript(
    text: str,
    *,
    words_per_s: float | None = None,
    syllables_per_s: float | None = None,
    sentence_pause_s: float = 0.0,
    clause_pause_s: float = 0.0,
    lead_in_s: float = 0.0,
    run: int = 0,
) -> list[Word]:
    """Time the words of a transcript with a stated speech rate.

    Give exactly one of ``words_per_s`` (every word lasts ``1 / words_per_s``) or
    ``syllables_per_s`` (a word lasts ``count_syllables(word) / syllables_per_s``).
    Words follow each other without gaps, except for the pauses after punctuation
    (:func:`pause_after`) and the ``lead_in_s`` before the first word. Onsets and
    offsets are rounded to 1 ms after accumulating, so rounding never builds up.

    Parameters
    ----------
    text : str
        The transcript (see :func:`split_transcript` for what a word is).
    words_per_s, syllables_per_s : float
        The speech rate; exactly one must be given, > 0.
    sentence_pause_s, clause_pause_s : float
        Silence after a sentence end and after clause punctuation, in seconds (>= 0).
    lead_in_s : float
        Silence before the first word, in seconds (>= 0).
    run : int
        The run index given to every word.

    Returns
    -------
    list of Word
        The timed words, times in seconds from the start of the run.
    """
    if (words_per_s is None) == (syllables_per_s is None):
        raise ValueError("give exactly one speech rate: words_per_s=... or syllables_per_s=..."
                         f" (got words_per_s={words_per_s}, syllables_per_s={syllables_per_s})")
    rate = words_per_s if words_per_s is not None else syllables_per_s
    if not rate > 0:
        raise ValueError(f"the speech rate must be > 0, got {rate}")
    for label, value in (("sentence_pause_s", sentence_pause_s),
                         ("clause_pause_s", clause_pause_s), ("lead_in_s", lead_in_s)):
        if not value >= 0:
            raise ValueError(f"{label} must be >= 0 seconds, got {value}")
    texts = split_transcript(text)
    if not texts:
        raise ValueError("the transcript holds no words")
    words = []
    clock = float(lead_in_s)
    for token in texts:
        duration = (1.0 / words_per_s if words_per_s is not None
                    else count_syllables(token) / syllables_per_s)
        onset = clock
        clock += duration
        words.append(Word(token, round(onset, 3), round(clock, 3), run))
        clock += pause_after(token, sentence_pause_s, clause_pause_s)
    return words
