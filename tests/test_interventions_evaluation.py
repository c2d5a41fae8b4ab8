"""Perplexity, pseudo-perplexity, accuracy; UDHR and prose readers; held-out splits."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config, tiny_model

from brainalign.interventions import NeuronSet, lesion
from brainalign.interventions.corpora import (TextSplit, prose_split, read_prose, read_udhr, udhr_dir,
                                              udhr_languages, udhr_split)
from brainalign.interventions.evaluation import (causal_perplexity, pseudo_perplexity, score_text,
                                                 sliding_windows, text_prefix)

IDS = torch.randint(0, 128, (50,), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("n_tokens,window,stride,first", [(50, 16, None, 1), (50, 16, 5, 1), (37, 8, 8, 0),
                                                          (10, 32, 4, 1), (64, 16, 1, 1)])
def test_sliding_windows_score_each_token_once_with_bounded_context(n_tokens, window, stride, first):
    scored = []
    for begin, end, score_from in sliding_windows(n_tokens, window, stride, first):
        assert end - begin <= window and begin <= score_from - first < end
        scored.extend(range(score_from, end))
    assert scored == list(range(first, n_tokens))


def reference_causal(model, ids, window, stride):
    """Token by token in float64: each token's context is what its window gives it."""
    reference = __import__("copy").deepcopy(model).double()
    nll, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for begin, end, score_from in sliding_windows(ids.numel(), window, stride, 1):
            logits = reference(input_ids=ids[begin:end][None]).logits[0]
            for t in range(score_from, end):
                log_p = torch.log_softmax(logits[t - begin - 1], -1)
                nll -= float(log_p[ids[t]])
                correct += int(int(log_p.argmax()) == int(ids[t]))
                n += 1
    return nll, correct, n


@pytest.mark.parametrize("window,stride", [(16, None), (16, 6), (64, None)])
def test_causal_perplexity_matches_token_by_token_reference(window, stride):
    model = tiny_model("llama")
    score = causal_perplexity(model, IDS, window=window, stride=stride, batch_size=2)
    nll, correct, n = reference_causal(model, IDS, window, stride)
    assert score.n_tokens == n == IDS.numel() - 1
    assert score.nll_sum == pytest.approx(nll, rel=1e-5)
    assert score.n_correct == correct
    assert score.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)


def test_prefix_is_context_never_scored():
    model = tiny_model("llama")
    bos = 7
    score = causal_perplexity(model, IDS, window=16, stride=8, prefix_ids=(bos,))
    nll, n = 0.0, 0
    with torch.no_grad():
        for begin, end, score_from in sliding_windows(IDS.numel(), 16, 8, 0):
            sequence = torch.cat([torch.tensor([bos]), IDS[begin:end]])
            log_p = torch.log_softmax(model(input_ids=sequence[None]).logits[0].double(), -1)
            for t in range(score_from, end):
                nll -= float(log_p[t - begin, IDS[t]])  # row t - begin predicts sequence[t - begin + 1]
                n += 1
    assert score.n_tokens == n == IDS.numel()
    assert score.nll_sum == pytest.approx(nll, rel=1e-5)


def test_text_prefix_reads_the_tokenizer():
    from test_record import tiny_tokenizer

    causal, encoder = tiny_tokenizer("causal"), tiny_tokenizer("encoder")
    assert text_prefix(causal) == (causal.convert_tokens_to_ids("<s>"),)
    assert text_prefix(encoder) == (encoder.cls_token_id,)


def test_full_window_perplexity_equals_transformers_loss():
    model = tiny_model("gpt2")
    with torch.no_grad():
        loss = model(input_ids=IDS[None], labels=IDS[None]).loss
    assert causal_perplexity(model, IDS, window=64).mean_nll == pytest.approx(float(loss), rel=1e-5)


def test_lesion_changes_perplexity_and_context_restores_it():
    model = tiny_model("llama")
    base = causal_perplexity(model, IDS, window=16)
    with lesion(model, NeuronSet({"L02.mlp.out": range(32)})):
        lesioned = causal_perplexity(model, IDS, window=16)
    assert abs(lesioned.nll_sum - base.nll_sum) > 1e-3
    assert causal_perplexity(model, IDS, window=16) == base


def test_pseudo_perplexity_matches_one_mask_at_a_time():
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config("bert")).eval()
    ids = IDS[:20] % 100 + 5
    mask_id, cls_id, sep_id = 4, 1, 2
    score = pseudo_perplexity(model, ids, mask_id, window=8, prefix_ids=(cls_id,), suffix_ids=(sep_id,),
                              batch_size=3)
    nll, correct = 0.0, 0
    with torch.no_grad():
        for begin, end, score_from in sliding_windows(ids.numel(), 8, None, 0):
            sequence = torch.cat([torch.tensor([cls_id]), ids[begin:end], torch.tensor([sep_id])])
            for t in range(score_from, end):
                masked = sequence.clone()
                masked[t - begin + 1] = mask_id
                log_p = torch.log_softmax(model(input_ids=masked[None]).logits[0, t - begin + 1].double(), -1)
                nll -= float(log_p[ids[t]])
                correct += int(int(log_p.argmax()) == int(ids[t]))
    assert score.n_tokens == 20
    assert score.nll_sum == pytest.approx(nll, rel=1e-5)
    assert score.n_correct == correct
    with pytest.raises(TypeError, match="masked-LM head"):
        pseudo_perplexity(tiny_model("bert"), ids, mask_id, window=8)



def test_encoder_text_score_with_stride_equal_to_window_uses_non_overlapping_windows():
    """``window`` counts [CLS] and [SEP]; a stride of the whole window means windows that
    do not overlap: every text token scored exactly once, as with stride = window - 2."""
    from transformers import BertForMaskedLM

    class Tokenizer:
        mask_token_id, cls_token_id, sep_token_id = 4, 1, 2

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [5 + ord(c) % 90 for c in text]}

    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_config("bert")).eval()
    text = "a few words of text to score " * 2
    whole = score_text(model, Tokenizer(), text, kind="encoder", window=10, stride=10)
    content = score_text(model, Tokenizer(), text, kind="encoder", window=10, stride=8)
    assert whole.n_tokens == len(text) and whole == content


HTML = """<!doctype html>
<html data-code="{code}" data-iso6393="{iso}" dir="ltr" lang="{lang}">
  <head><title>{name}</title></head>
  <body>
    <h1>Title &amp; more</h1>
    <header><h2>Preamble</h2><p>Whereas   one
      two.</p></header>
    <article data-number="1"><h2>Article 1</h2><p>First {lang} article.</p></article>
    <article data-number="2"><h2>Article 2</h2><p>Second <em>{lang}</em> text.</p>
      <ol><li>item a</li></ol></article>
  </body>
</html>
"""


def write_corpus(folder):
    for code, iso, lang, name in [("eng", "eng", "en", "English"), ("cmn_hans", "cmn", "zh", "Chinese"),
                                  ("cmn_hans_x", "cmn", "zh", "Chinese (x)"), ("deu_1996", "deu", "de-1996", "German"),
                                  ("ron_1953", "ron", "ro", "Romanian (1953)"),
                                  ("ron_2006", "ron", "ro", "Romanian (2006)"),
                                  ("deu_1901", "deu", "de-1901", "German (1901)")]:
        (folder / f"{code}.html").write_text(HTML.format(code=code, iso=iso, lang=lang, name=name), encoding="utf-8")
    return folder


def test_udhr_reader_on_generated_html(tmp_path):
    folder = write_corpus(tmp_path)
    english = read_udhr("en", folder)
    assert english.code == "eng" and english.name == "English" and english.iso6393 == "eng"
    assert english.paragraphs == ((0, "Title & more"), (0, "Preamble"), (0, "Whereas one two."),
                                  (1, "Article 1"), (1, "First en article."), (2, "Article 2"),
                                  (2, "Second en text."), (2, "item a"))
    assert english.text({1}) == "Article 1\nFirst en article."
    assert read_udhr("zh", folder).code == "cmn_hans"  # shortest code among same tag
    assert read_udhr("cmn_hans_x", folder).name == "Chinese (x)"
    assert read_udhr("de", folder).code == "deu_1996"
    assert read_udhr("deu", folder).language == "de-1996"
    assert read_udhr("ro", folder).code == "ron_2006"  # the newest of dated spellings
    assert [row["code"] for row in udhr_languages(folder)] == ["cmn_hans", "cmn_hans_x", "deu_1901",
                                                               "deu_1996", "eng", "ron_1953", "ron_2006"]
    split = udhr_split("en", heldout_articles={2}, root=folder)
    assert "Second en text." in split.heldout and "Second" not in split.fit and "First en" in split.fit
    assert split.description["heldout_articles"] == [2] and split.description["fit_articles"] == [0, 1]
    with pytest.raises(KeyError, match="no UDHR declaration for 'xx'"):
        read_udhr("xx", folder)


def test_missing_udhr_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="make udhr"):
        udhr_dir(tmp_path / "absent")


def test_prose_reader_and_splits(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("Header\r\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\r\nPara one.\r\n\r\n"
                    "Para two is here.\r\n\r\nPara three.\r\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\r\nLicence")
    text = read_prose(path)
    assert text == "Para one.\n\nPara two is here.\n\nPara three."
    split = prose_split(text, heldout_fraction=0.5)
    assert split.fit + "\n\n" + split.heldout == text
    with pytest.raises(ValueError, match="overlaps"):
        TextSplit(fit="abc def", heldout="def")
    with pytest.raises(FileNotFoundError):
        read_prose(tmp_path / "none.txt")
