"""Every word gets exactly its own tokens: WordPiece, byte-level BPE and SentencePiece.

The tokenizers are the registry models' own (minilm-l6-sentence-f32: WordPiece;
smollm2-135m-instruct-q4: byte-level BPE; gemma3-270m-base-q4km: SentencePiece), loaded alone
from their installed files.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brainalign.models.registry import REGISTRY, _materialise_gguf, is_installed, locate
from brainalign.record.alignment import AlignmentError, align_words

TOKENIZERS = {"wordpiece": "minilm-l6-sentence-f32",
              "bytelevel-bpe": "smollm2-135m-instruct-q4",
              "sentencepiece": "gemma3-270m-base-q4km"}


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizer(request):
    """The fast tokenizer of a registry model, without loading its weights."""
    from transformers import AutoTokenizer

    name = TOKENIZERS[request.param]
    if not is_installed(name):
        pytest.skip(f"model {name} not installed (make install)")
    spec = REGISTRY[name]
    path = locate(spec)
    if path.suffix == ".gguf":  # the registry's dequantised cache holds the tokenizer files
        path, _ = _materialise_gguf(name, path, spec.kind)
    loaded = AutoTokenizer.from_pretrained(path)
    loaded.family = request.param
    return loaded


def _alone(tokenizer, word: str) -> list[int]:
    return tokenizer(word, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def check_alignment(tokenizer, words: list[str]) -> None:
    """Assert the alignment properties for one word list."""
    try:
        alignment = align_words(tokenizer, words)
    except AlignmentError:
        # only acceptable when the tokenizer really has nothing for some word on its own
        assert any(not _alone(tokenizer, w) for w in words), words
        return
    text = alignment.text
    assert text == " ".join(w.strip() for w in words)
    full = tokenizer(text, add_special_tokens=True, split_special_tokens=True,
                     return_special_tokens_mask=True)
    special = np.asarray(full["special_tokens_mask"], dtype=bool)
    ids = np.asarray(full["input_ids"])
    # the word token sets partition exactly the non-special tokens, in order
    np.testing.assert_array_equal(alignment.input_ids, ids[~special])
    assert list(alignment.prefix_ids) + list(alignment.input_ids) + list(alignment.suffix_ids) \
        == ids.tolist()
    assert (np.diff(alignment.token_word) >= 0).all()
    counts = alignment.word_token_counts
    assert counts.sum() == alignment.n_tokens and (counts >= 1).all()
    previous_end = 0
    for index, word in enumerate(words):
        start, end = alignment.word_spans[index]
        assert text[start:end] == word.strip()
        tokens = alignment.word_tokens(index)
        offsets = alignment.token_offsets[tokens]
        # the word's tokens stay inside its territory: its own characters and the space before
        assert offsets[:, 0].min() >= previous_end and offsets[:, 1].max() <= end, (word, offsets)
        covered = np.zeros(end - start, dtype=bool)
        for token_start, token_end in offsets:
            covered[max(token_start, start) - start:max(token_end, start) - start] = True
        assert covered.all(), (word, offsets.tolist())
        decoded = tokenizer.decode(alignment.input_ids[tokens].tolist())
        if tokenizer.family == "wordpiece":
            # WordPiece lowercases and strips accents: compare with the word tokenized alone
            assert alignment.input_ids[tokens].tolist() == _alone(tokenizer, word.strip())
        else:
            assert decoded.strip() == word.strip(), (word, decoded)
        previous_end = end


PLAIN = st.text(alphabet=string.ascii_letters, min_size=1, max_size=10)
PUNCTUATED = st.builds(
    lambda before, core, after: before + core + after,
    st.sampled_from(["", '"', "(", "'", "“", "¿", "--"]),
    PLAIN,
    st.sampled_from(["", ",", ".", "!", "?", "'s", "n't", "...", ")", '."', "”", ";", ":"]),
)
HYPHENATED = st.lists(PLAIN, min_size=2, max_size=4).map("-".join)
NUMBERS = st.one_of(
    st.integers(0, 10**9).map(str),
    st.floats(0, 1e6, allow_nan=False).map(lambda x: f"{x:,.2f}"),
    st.integers(1900, 2100).map(lambda y: f"{y}s"),
)
NON_ASCII = st.one_of(
    st.sampled_from(["naïve", "café", "Straße", "日本語", "Ελληνικά", "русский", "مرحبا",
                     "😀", "naïve—really", "œuvre", "İstanbul", "ﬁne", "½", "№5"]),
    st.text(alphabet=st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=6),
)
RARE = st.text(alphabet="qxzjkvwy", min_size=15, max_size=60)
WORD = st.one_of(PLAIN, PUNCTUATED, HYPHENATED, NUMBERS, NON_ASCII, RARE)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(WORD, min_size=1, max_size=25))
def test_every_word_gets_exactly_its_own_tokens(tokenizer, words):
    check_alignment(tokenizer, words)


def test_known_sentence(tokenizer):
    words = ["Hello,", "world!", "don't", "state-of-the-art", "1,234.5", "naïve",
             "日本語", "Pneumonoultramicroscopicsilicovolcanoconiosis", "x"]
    check_alignment(tokenizer, words)
    alignment = align_words(tokenizer, words)
    # the long rare word is split into several pieces, all given to it
    assert alignment.word_token_counts[7] >= 4
    assert alignment.word_token_counts[-1] == 1


def test_whitespace_token_goes_to_the_next_word(tokenizer):
    # byte-level BPE and SentencePiece emit a lone space token before digits
    alignment = align_words(tokenizer, ["art", "1,234"])
    first = alignment.word_tokens(1)[0]
    start, end = alignment.token_offsets[first]
    assert start >= 3 and alignment.text[4:] == "1,234"
    assert alignment.token_word[-1] == 1


def test_specials_belong_to_no_word(tokenizer):
    alignment = align_words(tokenizer, ["a", "[SEP]", "<bos>", "<|im_start|>", "b"])
    specials = set(tokenizer.all_special_ids)
    assert not specials & set(alignment.input_ids.tolist())  # literal text stays text
    assert set(alignment.prefix_ids + alignment.suffix_ids) <= specials
    if tokenizer.family == "wordpiece":
        assert tokenizer.convert_ids_to_tokens(list(alignment.prefix_ids)) == ["[CLS]"]
        assert tokenizer.convert_ids_to_tokens(list(alignment.suffix_ids)) == ["[SEP]"]
    if tokenizer.family == "sentencepiece":
        assert tokenizer.convert_ids_to_tokens(list(alignment.prefix_ids)) == ["<bos>"]


def test_empty_word_is_an_error(tokenizer):
    with pytest.raises(AlignmentError, match="word 1"):
        align_words(tokenizer, ["a", "  ", "b"])
    with pytest.raises(AlignmentError, match="no words"):
        align_words(tokenizer, [])


def test_token_spanning_two_words_is_an_error():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    # no pre-tokenizer: the whole text "a b" becomes one token shared by both words
    backend = Tokenizer(WordLevel({"a b": 0, "[UNK]": 1}, unk_token="[UNK]"))
    merged = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(AlignmentError, match="spans words 0 to 1"):
        align_words(merged, ["a", "b"])
