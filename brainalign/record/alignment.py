"""Word-to-token alignment from a fast tokenizer's character offsets.

A story's words are joined with single spaces into one text and each word's character
span is recorded.  The text is tokenized once (Hugging Face ``tokenizers`` through
transformers, ``return_offsets_mapping=True``) and every non-special token is given to the
word whose characters it overlaps.  This holds for every common tokenizer family without
per-story fixes:

* byte-level BPE (GPT-2, Llama-3, SmolLM2) puts the space before a word inside the word's
  first token (``"Ġworld"`` spans ``" world"``) and may split one non-ASCII character into
  several byte tokens sharing the same offsets;
* SentencePiece (Gemma, Llama-2) marks the space with ``"▁"`` in the same way;
* WordPiece (BERT) continues words with ``"##"`` pieces and may replace a whole word with
  ``[UNK]``; its offsets still point into the original text.

A token made only of whitespace (a lone ``"Ġ"`` or ``"▁▁"``) overlaps no word; it goes to
the next word, whose leading space it is.  Special tokens the tokenizer adds (``[CLS]``,
``<bos>``...) belong to no word; they are kept apart as the prefix and suffix that the
recorder puts around every context window.  Text that merely looks like a special token
(``"[SEP]"`` inside a transcript) is tokenized as ordinary text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


class AlignmentError(ValueError):
    """A word that cannot be given its own tokens (empty, or merged into a neighbour)."""


@dataclass(frozen=True)
class WordAlignment:
    """Tokens of a word sequence and the word each token belongs to.

    Attributes
    ----------
    text : str
        The words joined by single spaces (what the tokenizer read).
    word_spans : ndarray of int, shape (n_words, 2)
        Character ``[start, end)`` of each word in ``text``.
    input_ids : ndarray of int, shape (n_tokens,)
        The non-special tokens of ``text``, in order.
    token_offsets : ndarray of int, shape (n_tokens, 2)
        Character ``[start, end)`` of each token in ``text`` (from the tokenizer).
    token_word : ndarray of int, shape (n_tokens,)
        Index of the word each token belongs to; non-decreasing, every word present.
    prefix_ids, suffix_ids : tuple of int
        Special tokens the tokenizer puts before and after a sequence (``<bos>``;
        ``[CLS]`` ... ``[SEP]``); they belong to no word.
    """

    text: str
    word_spans: np.ndarray
    input_ids: np.ndarray
    token_offsets: np.ndarray
    token_word: np.ndarray
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]

    @property
    def n_words(self) -> int:
        return len(self.word_spans)

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def word_token_starts(self) -> np.ndarray:
        """Index of each word's first token, shape (n_words,)."""
        return np.searchsorted(self.token_word, np.arange(self.n_words), side="left")

    @property
    def word_token_counts(self) -> np.ndarray:
        """Number of tokens of each word, shape (n_words,), all >= 1."""
        return np.bincount(self.token_word, minlength=self.n_words)

    def word_tokens(self, word: int) -> np.ndarray:
        """Token indices (into ``input_ids``) of one word."""
        start = self.word_token_starts[word]
        return np.arange(start, start + self.word_token_counts[word])


def _layout(words: Sequence[str]) -> tuple[str, np.ndarray]:
    """Join words with single spaces; each word's character span in the joined text."""
    spans = np.zeros((len(words), 2), dtype=np.int64)
    position = 0
    parts = []
    for index, word in enumerate(words):
        if not isinstance(word, str):
            raise AlignmentError(f"word {index} is {type(word).__name__} {word!r}, expected str")
        stripped = word.strip()
        if not stripped:
            raise AlignmentError(
                f"word {index} ({word!r}) is empty or whitespace: every word needs text to "
                "be aligned to tokens"
            )
        if index:
            position += 1  # the separating space
        spans[index] = (position, position + len(stripped))
        position += len(stripped)
        parts.append(stripped)
    return " ".join(parts), spans


def align_words(tokenizer, words: Sequence[str]) -> WordAlignment:
    """Tokenize words as one text and give each non-special token to its word.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerFast
        Must provide character offsets (``return_offsets_mapping``).
    words : sequence of str, length n_words
        Word texts in reading order; surrounding whitespace is ignored.

    Returns
    -------
    WordAlignment

    Raises
    ------
    AlignmentError
        If a word is empty, or ends up with no token of its own (its characters produced
        no token, or share a token with a neighbouring word).
    """
    if len(words) == 0:
        raise AlignmentError("no words to align")
    if not getattr(tokenizer, "is_fast", False):
        raise AlignmentError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: character offsets are "
            "needed to align tokens to words"
        )
    text, word_spans = _layout(words)
    encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True,
                         return_special_tokens_mask=True, split_special_tokens=True,
                         verbose=False)
    ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    special = np.asarray(encoding["special_tokens_mask"], dtype=bool)
    content = np.flatnonzero(~special)
    if len(content) == 0:
        raise AlignmentError(f"the tokenizer produced no tokens for {text[:80]!r}")
    prefix = tuple(int(i) for i in ids[: content[0]][special[: content[0]]])
    suffix = tuple(int(i) for i in ids[content[-1] + 1:][special[content[-1] + 1:]])
    ids, offsets = ids[content], offsets[content]

    # The word whose [start, end) the token overlaps; a token touching no word's characters
    # (pure whitespace) goes to the first word starting at or after its end.
    starts, ends = word_spans[:, 0], word_spans[:, 1]
    first_overlap = np.searchsorted(ends, offsets[:, 0], side="right")
    last_overlap = np.searchsorted(starts, offsets[:, 1], side="left") - 1
    overlaps = first_overlap <= last_overlap
    token_word = np.where(overlaps, first_overlap, np.searchsorted(starts, offsets[:, 1]))
    spanning = np.flatnonzero(overlaps & (last_overlap > first_overlap))
    if len(spanning):
        t = spanning[0]
        raise AlignmentError(
            f"token {t} ({tokenizer.convert_ids_to_tokens(int(ids[t]))!r}, characters "
            f"{offsets[t].tolist()}) spans words {first_overlap[t]} to {last_overlap[t]} "
            f"({text[offsets[t, 0]:offsets[t, 1]]!r}): words cannot be given their own tokens"
        )
    trailing = token_word >= len(word_spans)
    if trailing.any():
        # whitespace after the last word (some tokenizers emit it): belongs to the last word
        token_word[trailing] = len(word_spans) - 1
    counts = np.bincount(token_word, minlength=len(word_spans))
    if (counts == 0).any():
        word = int(np.flatnonzero(counts == 0)[0])
        raise AlignmentError(
            f"word {word} ({text[starts[word]:ends[word]]!r}) got no token of its own from "
            f"{type(tokenizer).__name__}: the tokenizer dropped its characters or merged "
            "them into a neighbouring word's token"
        )
    if (np.diff(token_word) < 0).any():
        raise AlignmentError("token offsets are not in reading order; cannot align words")
    return WordAlignment(text=text, word_spans=word_spans, input_ids=ids,
                         token_offsets=offsets, token_word=token_word,
                         prefix_ids=prefix, suffix_ids=suffix)
