"""Language-modelling scores of a (possibly lesioned) model: perplexity and top-1 accuracy.

* Causal models: sliding-window perplexity. Windows of ``window`` tokens start every
  ``stride`` tokens; each token is scored exactly once, in the first window that reaches it,
  with the tokens before it in that window as context (up to ``window - 1`` of them). The
  first token of a text has no context and is not scored, and a window never starts after
  the token before the first one it scores (with ``stride == window`` windows therefore
  overlap by one token). Next-token top-1 accuracy is counted on the same tokens.
* Masked models (BERT-like with a masked-LM head): pseudo-perplexity (Salazar et al., ACL
  2020): each token in turn is replaced by the mask token and scored from both sides;
  the masked copies of a window are batched.

Any intervention context of :mod:`brainalign.interventions` may be open around these calls.
Leans on torch (cross-entropy) only; the windowing is written here because no library
exposes it as a function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class LMScore:
    """Summed scores over the evaluated tokens.

    Attributes
    ----------
    n_tokens : int
        Number of scored tokens.
    nll_sum : float
        Sum of negative log-likelihoods, in nats.
    n_correct : int
        Scored tokens whose top-1 prediction was right.
    """

    n_tokens: int
    nll_sum: float
    n_correct: int

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.n_tokens if self.n_tokens else float("nan")

    @property
    def perplexity(self) -> float:
        """``exp(mean nll)``; ``inf`` when it overflows."""
        try:
            return math.exp(self.mean_nll)
        except OverflowError:
            return float("inf")

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_tokens if self.n_tokens else float("nan")

    def to_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "mean_nll": self.mean_nll, "perplexity": self.perplexity,
                "accuracy": self.accuracy}


def tokenize(tokenizer, text: str, max_tokens: int | None = None) -> torch.Tensor:
    """Token ids of ``text`` without special tokens, shape (n_tokens,), optionally truncated."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor(ids[:max_tokens] if max_tokens else ids, dtype=torch.long)
    if ids.numel() < 2:
        raise ValueError(f"text gives {ids.numel()} token(s); at least 2 are needed to score it")
    return ids


def text_prefix(tokenizer) -> tuple[int, ...]:
    """The special tokens the tokenizer puts before a text (e.g. Gemma's ``<bos>``; empty for
    SmolLM2), i.e. what the model saw at the start of its training sequences."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start:start + len(plain)] == plain:
            return tuple(with_special[:start])
    return ()


def sliding_windows(n_tokens: int, window: int, stride: int | None = None,
                    first_scored: int = 1) -> Iterator[tuple[int, int, int]]:
    """``(begin, end, score_from)`` for each window: tokens ``[score_from, end)`` are scored
    with context ``[begin, end)``; every token from ``first_scored`` on is scored once.

    Parameters
    ----------
    n_tokens : int
    window : int
        Tokens per forward pass.
    stride : int, optional
        Shift between windows, ``1 <= stride <= window`` (default: ``window``).
    first_scored : int
        1 for causal models (the first token has no context), 0 for masked models.
    """
    stride = window if stride is None else stride
    if window < 2 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 2 and 1 <= stride <= window, got window={window}, stride={stride}")
    scored_until = first_scored
    step = 0
    while scored_until < n_tokens:
        # A window never starts after the first token it must score has its context; with
        # causal scoring and stride == window this shifts windows back by one token.
        begin = min(step * stride, scored_until - first_scored)
        end = min(begin + window, n_tokens)
        if end > scored_until:
            yield begin, end, scored_until
            scored_until = end
        step += 1


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def causal_perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    window: int = 256,
    stride: int | None = None,
    batch_size: int = 4,
    prefix_ids: tuple[int, ...] = (),
    progress: bool = False,
) -> LMScore:
    """Sliding-window perplexity and next-token accuracy of a causal LM.

    Parameters
    ----------
    token_ids : LongTensor, shape (n_tokens,)
    window, stride : int
        See :func:`sliding_windows` (``window`` counts text tokens, not the prefix).
    batch_size : int
        Windows of equal length per forward pass.
    prefix_ids : tuple of int
        Tokens put before every window and never scored, e.g. the ``<bos>`` a model was
        trained with (:func:`text_prefix`); with a prefix the first text token is scored too.
    """
    token_ids = torch.as_tensor(token_ids).ravel()
    device = _model_device(model)
    prefix = torch.tensor(prefix_ids, dtype=torch.long)
    n_prefix = prefix.numel()
    windows = list(sliding_windows(token_ids.numel(), window, stride, first_scored=0 if n_prefix else 1))
    nll_sum, n_correct, n_scored = 0.0, 0, 0
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for w in windows:
        groups.setdefault(w[1] - w[0], []).append(w)
    batches = [ws[i:i + batch_size] for ws in groups.values() for i in range(0, len(ws), batch_size)]
    for batch in tqdm(batches, desc="perplexity", disable=not progress, leave=False):
        inputs = torch.stack([torch.cat([prefix, token_ids[b:e]]) for b, e, _ in batch]).to(device)
        logits = model(input_ids=inputs).logits[:, :-1].float()
        targets = inputs[:, 1:]
        scored = torch.zeros_like(targets, dtype=torch.bool)
        for row, (b, _, s) in enumerate(batch):
            scored[row, s - b + n_prefix - 1:] = True  # position p predicts token p + 1
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        nll_sum += float(nll[scored].double().sum())
        n_correct += int((logits.argmax(-1) == targets)[scored].sum())
        n_scored += int(scored.sum())
    return LMScore(n_scored, nll_sum, n_correct)


@torch.no_grad()
def pseudo_perplexity(
    model: torch.nn.Module,
    token_ids: torch.Tensor,
    mask_token_id: int,
    window: int = 128,
    stride: int | None = None,
    prefix_ids: tuple[int, ...] = (),
    suffix_ids: tuple[int, ...] = (),
    batch_size: int = 32,
    progress: bool = False,
) -> LMScore:
    """Pseudo-perplexity and masked top-1 accuracy of a masked LM.

    Parameters
    ----------
    token_ids : LongTensor, shape (n_tokens,)
        Content tokens, without special tokens.
    mask_token_id : int
    window : int
        Content tokens per window (``prefix_ids`` / ``suffix_ids``, e.g. [CLS] / [SEP], are
        added around each window).
    batch_size : int
        Masked copies per forward pass.
    """
    token_ids = torch.as_tensor(token_ids).ravel()
    device = _model_device(model)
    prefix = torch.tensor(prefix_ids, dtype=torch.long)
    suffix = torch.tensor(suffix_ids, dtype=torch.long)
    nll_sum, n_correct, n_scored = 0.0, 0, 0
    windows = list(sliding_windows(token_ids.numel(), window, stride, first_scored=0))
    for begin, end, score_from in tqdm(windows, desc="pseudo-perplexity", disable=not progress, leave=False):
        sequence = torch.cat([prefix, token_ids[begin:end], suffix])
        positions = torch.arange(score_from, end) - begin + prefix.numel()
        for chunk in positions.split(batch_size):
            inputs = sequence.repeat(chunk.numel(), 1)
            rows = torch.arange(chunk.numel())
            targets = inputs[rows, chunk].clone()
            inputs[rows, chunk] = mask_token_id
            output = model(input_ids=inputs.to(device))
            logits = getattr(output, "logits", None)
            if logits is None:
                raise TypeError(
                    f"{type(model).__name__} returns no logits: pseudo-perplexity needs a model with "
                    "a masked-LM head (e.g. BertForMaskedLM)"
                )
            picked = logits[rows.to(device), chunk.to(device)].float()
            targets = targets.to(device)
            nll_sum += float(torch.nn.functional.cross_entropy(picked, targets, reduction="sum"))
            n_correct += int((picked.argmax(-1) == targets).sum())
            n_scored += chunk.numel()
    return LMScore(n_scored, nll_sum, n_correct)


def score_text(
    model: torch.nn.Module,
    tokenizer,
    text: str,
    kind: str = "causal",
    max_tokens: int | None = None,
    window: int = 256,
    stride: int | None = None,
    batch_size: int = 4,
) -> LMScore:
    """Perplexity (causal) or pseudo-perplexity (``kind="encoder"``) of ``text``; causal
    windows start with the tokenizer's :func:`text_prefix`.

    ``batch_size`` is windows per forward pass (causal) or masked copies per forward pass
    (encoder); ``window`` counts special tokens for encoders, ``stride`` counts text tokens
    and is at most the text tokens of a window (so ``stride == window`` means
    non-overlapping windows for encoders too).
    """
    ids = tokenize(tokenizer, text, max_tokens)
    if kind == "causal":
        return causal_perplexity(model, ids, window=window, stride=stride, batch_size=batch_size,
                                 prefix_ids=text_prefix(tokenizer))
    if kind == "encoder":
        if tokenizer.mask_token_id is None:
            raise ValueError("pseudo-perplexity needs a tokenizer with a mask token")
        prefix = (tokenizer.cls_token_id,) if tokenizer.cls_token_id is not None else ()
        suffix = (tokenizer.sep_token_id,) if tokenizer.sep_token_id is not None else ()
        content = window - len(prefix) - len(suffix)
        return pseudo_perplexity(model, ids, tokenizer.mask_token_id, window=content,
                                 stride=None if stride is None else min(stride, content),
                                 prefix_ids=prefix, suffix_ids=suffix, batch_size=batch_size)
    raise ValueError(f"kind must be 'causal' or 'encoder', got {kind!r}")


def score_languages(
    model: torch.nn.Module,
    tokenizer,
    texts: Mapping[str, str],
    kind: str = "causal",
    max_tokens: int | None = None,
    window: int = 256,
    stride: int | None = None,
    batch_size: int = 4,
) -> dict[str, LMScore]:
    """:func:`score_text` for each ``{language: text}``."""
    return {language: score_text(model, tokenizer, text, kind=kind, max_tokens=max_tokens,
                                 window=window, stride=stride, batch_size=batch_size)
            for language, text in texts.items()}
