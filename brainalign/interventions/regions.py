"""Parameter regions (study C, Zhang et al., ACL 2024): importance, regions, zeroing, freezing.

* :func:`parameter_importance`: ``|theta * g|`` for every transformer-block matrix
  (embeddings and LM head excluded), ``g`` the language-modelling gradient accumulated in
  place in ``.grad`` over a stream of token chunks (no optimizer step, nothing of corpus
  size is held), divided by the number of chunks.
* :func:`language_importance`: the same per language, summed over languages, keeping each
  language's own top region for :func:`monolingual_region` (own top minus every other
  language's top).
* :func:`select_region`: per-matrix top / bottom / random fraction, with the same count
  in every matrix for the three kinds.
* :func:`zero_region` / :func:`scale_region`: context managers that edit a region's
  parameters and restore them bit for bit on exit (also on exceptions).
* :func:`dimension_profile`: how a region's entries concentrate on hidden dimensions
  (the d_model-sized axis of each matrix); :func:`dimension_parameter` picks the single
  parameter probed by multiplying it by 4.
* :func:`continue_training`: further training with the region frozen (restored after
  every optimizer step) or not, to measure forgetting.

Leans on torch only (autograd, topk, optimizers).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from brainalign.models.sites import RESIDUAL_WRITERS, block_list, edit_in_force


def block_matrices(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Every parameter with >= 2 dimensions inside the transformer blocks, by full name.

    Embeddings, the LM head and all norm / bias vectors are outside this set.
    """
    prefix, _ = block_list(model)
    out = {name: p for name, p in model.named_parameters()
           if name.startswith(prefix + ".") and p.ndim >= 2}
    if not out:
        raise ValueError(f"no block matrices found under {prefix}")
    return out


@contextlib.contextmanager
def _only_grad_for(model: torch.nn.Module, names: Iterable[str]) -> Iterator[dict]:
    """Gradients for ``names`` only (saves memory); requires_grad flags restored on exit."""
    params = dict(model.named_parameters())
    keep = set(names)
    saved = {name: p.requires_grad for name, p in params.items()}
    try:
        for name, p in params.items():
            p.requires_grad_(name in keep)
            if name in keep:
                p.grad = None
        yield {name: params[name] for name in keep}
    finally:
        for name, p in params.items():
            p.requires_grad_(saved[name])


def _chunk_batch(chunk: torch.Tensor, device: torch.device,
                 prefix_ids: Sequence[int] = ()) -> torch.Tensor:
    """A chunk as a (batch, n_tokens) batch on ``device``, ``prefix_ids`` before each row."""
    chunk = torch.as_tensor(chunk)
    chunk = chunk[None] if chunk.ndim == 1 else chunk
    if len(prefix_ids):
        prefix = torch.as_tensor(list(prefix_ids), dtype=chunk.dtype).expand(len(chunk), -1)
        chunk = torch.cat([prefix, chunk], dim=1)
    return chunk.to(device)


def parameter_importance(
    model: torch.nn.Module,
    token_chunks: Iterable[torch.Tensor],
    names: Iterable[str] | None = None,
    progress: bool = False,
    prefix_ids: Sequence[int] = (),
) -> dict[str, torch.Tensor]:
    """Importance ``|theta * g| / n_chunks`` of block matrices for a causal LM.

    ``g`` is the sum over chunks of the gradient of each chunk's mean next-token
    cross-entropy, summed in float32 whatever the model's dtype (a bfloat16 running sum
    swamps later chunks); the product with ``theta`` is taken in float32 too. The model is
    scored in eval mode (no dropout) and left in the mode it was in.

    Parameters
    ----------
    token_chunks : iterable of LongTensor, shape (n_tokens,) or (batch, n_tokens)
        Consumed lazily, one forward/backward pass each. Every token is text: no attention
        mask is applied, so the rows of a batch must be unpadded windows of equal length
        (as :func:`token_chunks` gives); pass texts of other lengths as separate chunks.
    names : iterable of str, optional
        Parameters to score (default :func:`block_matrices`).
    prefix_ids : sequence of int
        Tokens put before every chunk, as in training and in the evaluation
        (:func:`~brainalign.interventions.evaluation.text_prefix`: Gemma's ``<bos>``;
        empty for SmolLM2). Without it a model trained with ``<bos>`` is scored on inputs
        it never saw.

    Returns
    -------
    dict of str to Tensor
        Same shapes as the parameters, float32, on the model's device.
    """
    names = list(names) if names is not None else list(block_matrices(model))
    device = next(model.parameters()).device
    n_chunks = 0
    was_training = model.training
    model.eval()
    try:
        with _only_grad_for(model, names) as params:
            summed = {name: torch.zeros(params[name].shape, dtype=torch.float32,
                                        device=params[name].device) for name in names}
            for chunk in tqdm(token_chunks, desc="importance", disable=not progress, leave=False):
                ids = _chunk_batch(chunk, device, prefix_ids)
                model(input_ids=ids, labels=ids).loss.backward()
                for name in names:
                    p = params[name]
                    if p.grad is not None:
                        summed[name] += p.grad.float()
                        p.grad = None
                n_chunks += 1
            if n_chunks == 0:
                raise ValueError("no token chunks were given")
            return {name: (params[name].detach().float() * summed.pop(name)).abs_() / n_chunks
                    for name in names}
    finally:
        model.train(was_training)


def token_chunks(token_ids: torch.Tensor, chunk_tokens: int = 256) -> Iterator[torch.Tensor]:
    """Consecutive non-overlapping chunks of ``token_ids`` (last one dropped if < 2 tokens)."""
    token_ids = torch.as_tensor(token_ids).ravel()
    for start in range(0, token_ids.numel(), chunk_tokens):
        chunk = token_ids[start:start + chunk_tokens]
        if chunk.numel() >= 2:
            yield chunk


@dataclass
class Region:
    """A set of parameter entries: flat indices per parameter.

    Attributes
    ----------
    indices : dict of str to LongTensor
        Parameter name -> sorted flat indices into ``param.view(-1)`` (CPU).
    name : str
    n_parameters : int
        Entries of all matrices the region was chosen from (for :attr:`fraction`).
    """

    indices: dict[str, torch.Tensor]
    name: str = ""
    n_parameters: int = 0

    def __post_init__(self):
        self.indices = {k: torch.unique(torch.as_tensor(v, dtype=torch.long).cpu())
                        for k, v in self.indices.items()}
        self.indices = {k: v for k, v in self.indices.items() if v.numel()}

    @property
    def size(self) -> int:
        return int(sum(v.numel() for v in self.indices.values()))

    @property
    def fraction(self) -> float:
        return self.size / self.n_parameters if self.n_parameters else float("nan")

    def counts(self) -> dict[str, int]:
        """Entries per matrix."""
        return {k: int(v.numel()) for k, v in self.indices.items()}

    def difference(self, *others: "Region", name: str | None = None) -> "Region":
        """Entries in this region and in none of ``others``."""
        out = {}
        for key, index in self.indices.items():
            drop = [o.indices[key] for o in others if key in o.indices]
            out[key] = index[~torch.isin(index, torch.cat(drop))] if drop else index
        return Region(out, self.name if name is None else name, self.n_parameters)

    def union(self, *others: "Region", name: str | None = None) -> "Region":
        out = {k: [v] for k, v in self.indices.items()}
        for other in others:
            for k, v in other.indices.items():
                out.setdefault(k, []).append(v)
        return Region({k: torch.cat(v) for k, v in out.items()},
                      self.name if name is None else name, self.n_parameters)

    def save(self, path) -> None:
        """Write as ``.npz`` (one int64 array per parameter; names with '/' for '.')."""
        np.savez_compressed(path, **{k.replace(".", "/"): v.numpy() for k, v in self.indices.items()},
                            __meta__=np.array([self.name, str(self.n_parameters)]))

    @classmethod
    def load(cls, path) -> "Region":
        with np.load(path) as data:
            meta = data["__meta__"]
            return cls({k.replace("/", "."): torch.from_numpy(data[k]) for k in data.files if k != "__meta__"},
                       name=str(meta[0]), n_parameters=int(meta[1]))


RegionKind = Literal["top", "bottom", "random"]


def select_region(
    scores: Mapping[str, torch.Tensor],
    fraction: float = 0.01,
    which: RegionKind = "top",
    seed: int = 0,
    name: str | None = None,
) -> Region:
    """Per matrix, the ``round(fraction * numel)`` (at least 1) entries of highest (``top``)
    or lowest (``bottom``) score, or chosen at random (``random``): the three kinds have the
    same count in every matrix.

    A parameter of more than two dimensions is a stack of matrices (a mixture-of-experts
    layer stores its experts as one ``(n_experts, out, in)`` tensor): each matrix of the
    stack is a matrix here, with its own count, as each expert's ``nn.Linear`` would be.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if which not in ("top", "bottom", "random"):
        raise ValueError(f"which must be 'top', 'bottom' or 'random', got {which!r}")
    generator = torch.Generator().manual_seed(seed)
    indices, total = {}, 0
    for key, score in scores.items():
        matrices = score.reshape(-1, *score.shape[-2:]).flatten(1)  # (n_matrices, entries)
        n_matrices, per_matrix = matrices.shape
        k = max(1, int(round(fraction * per_matrix)))
        total += matrices.numel()
        if which == "random":
            chosen = torch.stack([torch.randperm(per_matrix, generator=generator)[:k]
                                  for _ in range(n_matrices)])
        else:
            chosen = torch.topk(matrices.float(), k, dim=1, largest=which == "top",
                                sorted=False).indices.cpu()
        offsets = torch.arange(n_matrices)[:, None] * per_matrix
        indices[key] = (chosen + offsets).reshape(-1)
    return Region(indices, name or f"{which}-{fraction:g}", total)


@dataclass
class LanguageImportance:
    """Importance accumulated per language.

    Attributes
    ----------
    total : dict of str to Tensor
        Sum over languages of each language's :func:`parameter_importance`.
    language_top : dict of str to Region
        Each language's own per-matrix top-``fraction`` region.
    fraction : float
    n_tokens : dict of str to int
        Tokens each language's importance was computed on.
    """

    total: dict[str, torch.Tensor]
    language_top: dict[str, Region]
    fraction: float
    n_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.language_top)


def language_importance(
    model: torch.nn.Module,
    token_ids_by_language: Mapping[str, torch.Tensor],
    fraction: float = 0.01,
    chunk_tokens: int = 256,
    progress: bool = False,
    prefix_ids: Sequence[int] = (),
) -> LanguageImportance:
    """:func:`parameter_importance` for each language over ``chunk_tokens`` chunks of its
    text; only the running total and each language's top region are kept in memory.

    Parameters
    ----------
    token_ids_by_language : mapping of str to LongTensor (n_tokens,)
        The *fit* text of each language (never the held-out text).
    prefix_ids : sequence of int
        Put before every chunk (see :func:`parameter_importance`).
    """
    total: dict[str, torch.Tensor] = {}
    tops, n_tokens = {}, {}
    for language, ids in tqdm(token_ids_by_language.items(), desc="languages", disable=not progress):
        scores = parameter_importance(model, token_chunks(ids, chunk_tokens),
                                      prefix_ids=prefix_ids)
        tops[language] = select_region(scores, fraction, "top", name=f"top-{fraction:g}-{language}")
        n_tokens[language] = int(torch.as_tensor(ids).numel())
        for key, value in scores.items():
            if key in total:
                total[key] += value
            else:
                total[key] = value
        del scores
    return LanguageImportance(total, tops, fraction, n_tokens)


def monolingual_region(importance: LanguageImportance, language: str) -> Region:
    """``language``'s own top region minus the top region of every other language."""
    if language not in importance.language_top:
        raise KeyError(f"no importance for {language!r}; have {importance.languages}")
    others = [r for lang, r in importance.language_top.items() if lang != language]
    return importance.language_top[language].difference(*others, name=f"monolingual-{language}")


def _snapshot(model: torch.nn.Module, region: Region) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    missing = [k for k in region.indices if k not in params]
    if missing:
        raise KeyError(f"region names parameters the model does not have: {missing[:3]}")
    return {k: params[k].detach().reshape(-1)[v.to(params[k].device)].clone()
            for k, v in region.indices.items()}


@torch.no_grad()
def _write(model: torch.nn.Module, region: Region, values: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for key, value in values.items():
        param = params[key]
        if not param.is_contiguous():
            raise ValueError(f"parameter {key} is not contiguous; cannot edit it in place")
        param.data.view(-1)[region.indices[key].to(param.device)] = value


@contextlib.contextmanager
def edit_region(model: torch.nn.Module, region: Region,
                edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[Region]:
    """Replace the region's values ``v`` by ``edit(v)`` inside the context; the original
    values are written back exactly on exit, whatever happens inside. The edit is in force
    for recordings made inside (:func:`brainalign.models.sites.edit_in_force`: named by a
    hash of the region's new values)."""
    saved = _snapshot(model, region)
    try:
        edited = {k: edit(v) for k, v in saved.items()}
        _write(model, region, edited)
        digest = hashlib.sha256()
        for name, values in edited.items():
            digest.update(name.encode() + b"\0" + region.indices[name].cpu().numpy().astype("<i8").tobytes()
                          + values.detach().float().cpu().numpy().astype("<f4").tobytes())
        with edit_in_force(model, {"kind": "parameters", "region": region.name,
                                   "n_parameters": region.size,
                                   "values_sha256": digest.hexdigest()}):
            yield region
    finally:
        _write(model, region, saved)


def zero_region(model: torch.nn.Module, region: Region):
    """Context manager: the region's parameters are 0 inside, restored exactly after."""
    return edit_region(model, region, torch.zeros_like)


def scale_region(model: torch.nn.Module, region: Region, factor: float):
    """Context manager: the region's parameters are multiplied by ``factor`` inside."""
    return edit_region(model, region, lambda values: values * factor)


def _hidden_axis(module: torch.nn.Module, name: str, shape: torch.Size, hidden_size: int) -> int | None:
    """Axis of a weight that indexes hidden (d_model) dimensions, or None.

    The output axis for the matrices that write the residual stream
    (:data:`~brainalign.models.sites.RESIDUAL_WRITERS`: attention output and down
    projections), the input axis for the others; the other axis when only it has the
    hidden size. Square matrices are decided by the name alone: the module's last name
    for a ``weight``; for a stack of expert matrices ``(n_experts, out, in)``, stored as
    a parameter of its own name (``experts.down_proj``), that name. The axis counts the
    stack's leading axes (2 or 1 for a 3-D stack).
    """
    lead = len(shape) - 2
    if len(shape) > 2:
        output_axis, input_axis = lead, lead + 1
        writer = name.rsplit(".", 1)[-1]
    else:
        rows_are_output = type(module).__name__ != "Conv1D"  # GPT-2's Conv1D stores (in, out)
        output_axis, input_axis = (0, 1) if rows_are_output else (1, 0)
        writer = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]
    preferred = output_axis if writer in RESIDUAL_WRITERS else input_axis
    if shape[preferred] == hidden_size:
        return preferred
    other = output_axis + input_axis - preferred
    return other if shape[other] == hidden_size else None


@dataclass
class DimensionProfile:
    """Region entries per hidden dimension.

    Attributes
    ----------
    counts : ndarray of int, shape (hidden_size,)
        Region entries whose index on the matrix's hidden axis is each dimension.
    n_entries : int
        Region entries on matrices that have a hidden axis.
    """

    counts: np.ndarray
    n_entries: int

    def top_dimensions(self, k: int = 5) -> np.ndarray:
        return np.argsort(-self.counts, kind="stable")[:k]

    @property
    def concentration(self) -> float:
        """Entries on the most loaded dimension over the mean per dimension (1 = uniform)."""
        return float(self.counts.max() / self.counts.mean()) if self.counts.sum() else float("nan")

    def control_dimension(self) -> int:
        """A typical dimension: the lowest-index one whose count is the median count (the
        upper median for an even number of dimensions)."""
        median = np.sort(self.counts)[len(self.counts) // 2]
        return int(np.flatnonzero(self.counts == median)[0])


def _hidden_size(model: torch.nn.Module) -> int:
    config = getattr(model.config, "text_config", None) or model.config
    return int(getattr(config, "hidden_size", None) or config.n_embd)


def _axis_map(model: torch.nn.Module, names: Iterable[str]) -> dict[str, int | None]:
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    hidden = _hidden_size(model)
    return {n: _hidden_axis(modules[n.rsplit(".", 1)[0]], n, params[n].shape, hidden) for n in names}


def dimension_profile(model: torch.nn.Module, region: Region) -> DimensionProfile:
    """Count the region's entries per hidden dimension over all its matrices."""
    params = dict(model.named_parameters())
    hidden = _hidden_size(model)
    counts = np.zeros(hidden, dtype=np.int64)
    n_entries = 0
    for key, axis in _axis_map(model, region.indices).items():
        if axis is None:
            continue
        coords = np.unravel_index(region.indices[key].numpy(), tuple(params[key].shape))
        counts += np.bincount(coords[axis], minlength=hidden)
        n_entries += region.indices[key].numel()
    return DimensionProfile(counts, n_entries)


def block_index(name: str) -> int | None:
    """Transformer block of a parameter name (``model.layers.3.mlp...`` -> 3), else None."""
    match = re.search(r"\.(\d+)\.", name)
    return None if match is None else int(match.group(1))


def dimension_parameter(
    model: torch.nn.Module,
    region: Region,
    scores: Mapping[str, torch.Tensor],
    dimension: int,
    control_dimension: int,
    layer: int | None = None,
) -> tuple[Region, Region]:
    """One parameter on ``dimension`` and its twin on ``control_dimension``.

    The matrix is the one holding the most region entries on ``dimension`` (among the
    matrices of block ``layer`` when given, 0-based: study C probes a layer-1 parameter);
    the parameter is its highest-scoring entry on that dimension; the twin is the entry
    of the same matrix with the same index on the other axis but ``control_dimension``
    on the hidden axis, so that the two differ only in the hidden dimension.

    Returns
    -------
    (Region, Region)
        Single-entry regions for the dimension and the control.
    """
    params = dict(model.named_parameters())
    best_key, best_count = None, 0
    axes = _axis_map(model, region.indices)
    for key, axis in axes.items():
        if axis is None or (layer is not None and block_index(key) != layer):
            continue
        coords = np.unravel_index(region.indices[key].numpy(), tuple(params[key].shape))
        count = int((coords[axis] == dimension).sum())
        if count > best_count:
            best_key, best_count = key, count
    if best_key is None:
        where = "" if layer is None else f" in block {layer}"
        raise ValueError(f"no region entry lies on hidden dimension {dimension}{where}")
    axis = axes[best_key]
    shape = tuple(params[best_key].shape)
    line = scores[best_key].reshape(shape).select(axis, dimension)  # the other axes' entries
    others = np.unravel_index(int(torch.argmax(line)), tuple(line.shape))
    coords = tuple(int(c) for c in (*others[:axis], dimension, *others[axis:]))
    twin = coords[:axis] + (control_dimension,) + coords[axis + 1:]
    flat = int(np.ravel_multi_index(coords, shape))
    flat_twin = int(np.ravel_multi_index(twin, shape))
    total = sum(p.numel() for p in params.values())
    return (Region({best_key: torch.tensor([flat])}, f"dim{dimension}:{best_key}{list(coords)}", total),
            Region({best_key: torch.tensor([flat_twin])}, f"dim{control_dimension}:{best_key}{list(twin)}", total))


def continue_training(
    model: torch.nn.Module,
    token_chunks_iter: Iterable[torch.Tensor],
    frozen: Region | None = None,
    lr: float = 1e-4,
    names: Iterable[str] | None = None,
    progress: bool = False,
    prefix_ids: Sequence[int] = (),
) -> list[float]:
    """Train block matrices (default) with AdamW on a stream of token chunks; when
    ``frozen`` is given, its entries are written back to their starting values after
    every optimizer step (the region stays exactly as it was). ``prefix_ids`` are put
    before every chunk (see :func:`parameter_importance`).

    Returns
    -------
    list of float
        Training loss of each step. The model is left in eval mode.
    """
    names = list(names) if names is not None else list(block_matrices(model))
    device = next(model.parameters()).device
    saved = _snapshot(model, frozen) if frozen is not None else None
    losses = []
    with _only_grad_for(model, names) as params:
        optimizer = torch.optim.AdamW(list(params.values()), lr=lr, weight_decay=0.0)
        model.train()
        try:
            for chunk in tqdm(token_chunks_iter, desc="training", disable=not progress, leave=False):
                ids = _chunk_batch(chunk, device, prefix_ids)
                loss = model(input_ids=ids, labels=ids).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if saved is not None:
                    _write(model, frozen, saved)
                losses.append(float(loss.detach()))
        finally:
            optimizer.zero_grad(set_to_none=True)
            model.eval()
    return losses
