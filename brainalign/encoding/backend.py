"""Compute placement for the encoding stage: himalaya backend and target batch size.

himalaya keeps its array backend in a module-level global. This module owns the one
place where brainalign switches it (always restoring the previous backend afterwards)
and the rule that sizes target batches from the memory actually free on the device, so
whole-brain fits (hundreds of thousands of targets) never run out of GPU memory.

Backend rule (``backend="auto"``):

* ``"torch_cuda"`` when ``torch.cuda.is_available()``: himalaya's GPU path, where the
  batched matrix products over alphas and targets run at device speed.
* ``"numpy"`` otherwise. On CPU, himalaya's numpy and torch backends call the same BLAS
  for the heavy products; numpy avoids a tensor round trip for inputs and outputs that
  are numpy arrays already, and its float64 path matches scikit-learn to rounding.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import numpy as np

logger = logging.getLogger(__name__)

#: Backends brainalign accepts (a subset of himalaya's).
BACKENDS = ("numpy", "torch", "torch_cuda")

#: Memory budget for one target batch on CPU, in bytes (keeps laptops responsive).
CPU_BATCH_BYTES = 1 << 30

#: Fraction of the free GPU memory a target batch may use (the rest is headroom for
#: the decompositions, the allocator and other processes).
GPU_MEMORY_FRACTION = 0.5


def cuda_available() -> bool:
    """True when torch sees a CUDA device (False when torch is not importable)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def choose_backend(backend: str = "auto") -> str:
    """Resolve ``"auto"`` to ``"torch_cuda"`` (CUDA present) or ``"numpy"``.

    Parameters
    ----------
    backend : {"auto", "numpy", "torch", "torch_cuda"}

    Returns
    -------
    name : str
        A himalaya backend name.
    """
    if backend == "auto":
        return "torch_cuda" if cuda_available() else "numpy"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if backend == "torch_cuda" and not cuda_available():
        raise ValueError("backend='torch_cuda' was requested but torch sees no CUDA device")
    return backend


@contextlib.contextmanager
def himalaya_backend(name: str) -> Iterator[object]:
    """Set himalaya's backend for the duration of a block, then restore the previous one.

    Yields the himalaya backend module (``to_numpy``, ``asarray``...).
    """
    from himalaya import backend as hb

    previous = hb.get_backend().name
    module = hb.set_backend(name, on_error="raise")
    try:
        yield module
    finally:
        hb.set_backend(previous, on_error="raise")


def free_device_bytes(backend: str) -> int | None:
    """Free memory of the current CUDA device in bytes (None for CPU backends)."""
    if backend != "torch_cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info()
    return int(free)


def bytes_per_target(n_samples: int, n_features: int, n_alphas: int, solver: str,
                     itemsize: int = 4) -> int:
    """Peak bytes one target adds during himalaya's cross-validated ridge.

    Per target the solver holds the training/validation columns of Y, one prediction per
    alpha for the validation samples, one score per alpha and split, and, during the
    refit, one weight vector per alpha (primal: n_features long; kernel: n_samples long).
    """
    refit_length = n_features if solver == "primal" else n_samples
    per_target = 2 * n_samples + n_alphas * (n_samples + refit_length) + 4 * n_alphas
    return int(per_target * itemsize)


def target_batch_size(n_targets: int, n_samples: int, n_features: int, n_alphas: int,
                      solver: str, backend: str, itemsize: int = 4,
                      free_bytes: int | None = None) -> int:
    """Number of targets solved at once so the batch fits in memory.

    Parameters
    ----------
    n_targets, n_samples, n_features, n_alphas : int
        Problem size (n_samples = time points, TRs).
    solver : {"primal", "kernel"}
    backend : str
        himalaya backend name; on ``"torch_cuda"`` the budget is
        ``GPU_MEMORY_FRACTION`` of the free device memory, elsewhere ``CPU_BATCH_BYTES``.
    itemsize : int
        Bytes per array element (4 for float32, 8 for float64).
    free_bytes : int, optional
        Override of the free memory (for tests and planning).

    Returns
    -------
    batch : int
        Between 1 and ``n_targets``.
    """
    if free_bytes is None:
        free_bytes = free_device_bytes(backend)
    budget = CPU_BATCH_BYTES if free_bytes is None else int(GPU_MEMORY_FRACTION * free_bytes)
    per_target = bytes_per_target(n_samples, n_features, n_alphas, solver, itemsize)
    batch = int(np.clip(budget // max(per_target, 1), 1, max(n_targets, 1)))
    logger.debug("target batch %d of %d (budget %.2f GiB, %d B per target)", batch,
                 n_targets, budget / 2**30, per_target)
    return batch
