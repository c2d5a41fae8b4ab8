"""Moving neuron matrices onto a torch device in chunks, and the chunked reductions on them.

The decompositions in :mod:`brainalign.patterns` work on matrices far larger than the
intermediate products they need (458,752 neurons x 2,000 TRs is 3.7 GB of float32). This
module owns the rules that keep that affordable:

- :func:`to_device` copies a numpy array, ``np.memmap`` or ``np.load(mmap_mode="r")``
  array onto the device one block of rows at a time, so the host never holds a second
  full copy and the device holds exactly one. A transposed view (for example the
  ``(n_neurons, n_tr)`` view of a C-ordered ``(n_tr, n_neurons)`` memmap) keeps its
  memory order on the device, so no transpose is ever materialised.
- :func:`row_chunks` yields row ranges whose size bounds every ``(chunk, k)``
  temporary; the estimators loop over them for distances, codes and Gram matrices.
- :class:`NeuronBlocks` stands in for that device copy when the recording is too long to
  hold (a reference corpus of 100k words is 20,000 TRs): a lazy, standardised
  ``(n_neurons, n_tr)`` matrix whose row blocks are read from the memory map when the
  estimators index them, and whose pages are handed back to the kernel after every read,
  so resident memory is one block, whatever the corpus length.

Plain torch; no other library.
"""

from __future__ import annotations

import mmap
from typing import Iterator

import numpy as np
import torch
from scipy import sparse
from sklearn.utils.validation import check_is_fitted, validate_data

#: Number of float32 values a default row chunk may hold (256 MiB).
DEFAULT_CHUNK_VALUES = 1 << 26


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device to compute on: CUDA when available and ``device`` is None.

    Parameters
    ----------
    device : str, torch.device or None
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``..., or None for "CUDA if available, else CPU".
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {str(device)!r} is not a torch device; allowed: cpu, cuda, "
                         "cuda:N, mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but torch sees no CUDA device")
    return device


def default_chunk_rows(n_columns: int, chunk_size: int | None = None) -> int:
    """Rows per chunk: ``chunk_size`` if given, else about 256 MiB of float32 rows."""
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
        return int(chunk_size)
    return max(1, DEFAULT_CHUNK_VALUES // max(1, int(n_columns)))


def row_chunks(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``chunk_rows`` rows covering ``range(n_rows)``."""
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))


class NeuronBlocks:
    """Standardised neuron time courses on disk, read one block of neurons at a time.

    The lazy counterpart of the ``(n_neurons, n_rows)`` device copy that study A's
    estimators work on: ``blocks[a:b]`` reads neurons ``a..b-1`` over the chosen rows (TRs)
    of ``data``, centres and scales them, and returns a float32 ``(b - a, n_rows)`` tensor
    on ``device``; an integer or an index array reads single neurons. Nothing else is kept,
    and after each read the memory map's pages are released (``madvise(MADV_DONTNEED)``),
    so the process holds one block however long the recording. The estimators' chunked
    loops (codes, sufficient statistics, distances) then make one pass over the file each.

    Parameters
    ----------
    data : ndarray or np.memmap, shape (n_tr, n_neurons)
        Time courses (a memory map for recordings that do not fit in memory).
    rows : ndarray of int, shape (n_rows,)
        Sorted TRs to use.
    mean, scale : ndarray, shape (n_neurons,)
        Per-neuron centre and scale (``(x - mean) / scale``); see :meth:`standardized`.
    device : torch.device
    """

    ndim = 2
    dtype = torch.float32

    def __init__(self, data, rows: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                 device: torch.device):
        self.data = data
        self.rows = np.asarray(rows)
        contiguous = len(self.rows) and self.rows[-1] - self.rows[0] + 1 == len(self.rows)
        self._row_index = slice(int(self.rows[0]), int(self.rows[-1]) + 1) if contiguous else self.rows
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.device = torch.device(device)
        self.shape = (int(data.shape[1]), len(self.rows))

    @classmethod
    def standardized(cls, data, rows: np.ndarray, device: torch.device,
                     standardize: bool = True) -> "NeuronBlocks":
        """Blocks of ``data[rows]`` with each neuron centred and scaled to unit L2 norm.

        The mean and the norm are accumulated in float64 over blocks of TRs (contiguous
        reads), in two passes (mean, then squared deviations), so no cancellation.
        ``standardize=False`` keeps the raw values (mean 0, scale 1).
        """
        rows = np.asarray(rows)
        n_neurons = data.shape[1]
        mean, scale = np.zeros(n_neurons), np.ones(n_neurons)
        if standardize:
            tr_chunks = list(row_chunks(len(rows), default_chunk_rows(n_neurons)))
            for chunk in tr_chunks:
                mean += _read(data, rows[chunk], slice(None)).sum(0)
            mean /= len(rows)
            squares = np.zeros(n_neurons)
            for chunk in tr_chunks:
                squares += ((_read(data, rows[chunk], slice(None)) - mean) ** 2).sum(0)
            norm = np.sqrt(squares)
            scale = np.where(norm > 1e-12, norm, 1.0)
        return cls(data, rows, mean, scale, device)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        single = isinstance(index, (int, np.integer))
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if isinstance(index, slice):
            cols = index
        else:
            cols = np.atleast_1d(np.asarray(index, dtype=np.int64))
            order = np.argsort(cols, kind="stable")  # memory maps read sorted columns fastest
            sorted_cols = cols[order]
            block = np.empty((len(self.rows), len(cols)))
            block[:, order] = self._standardized(sorted_cols)
            out = torch.from_numpy(block.T.astype(np.float32)).to(self.device)
            return out[0] if single else out
        return torch.from_numpy(self._standardized(cols).T.astype(np.float32)).to(self.device)

    def _standardized(self, cols) -> np.ndarray:
        block = _read(self.data, self._row_index, cols)
        return (block - self.mean[cols]) / self.scale[cols]


def _read(data, rows, cols) -> np.ndarray:
    """``data[rows][:, cols]`` as float64, checked finite, with the map's pages released."""
    both_arrays = not isinstance(rows, slice) and not isinstance(cols, slice)
    block = np.asarray(data[np.ix_(rows, cols)] if both_arrays else data[rows, cols],
                       dtype=np.float64)
    if not np.isfinite(block).all():
        raise ValueError("time courses contain NaN or inf (in the block of neurons "
                         f"{_describe(cols)})")
    release_pages(data)
    return block


def _describe(cols) -> str:
    if isinstance(cols, slice):
        return f"{cols.start or 0}..{'end' if cols.stop is None else cols.stop - 1}"
    return f"{int(np.min(cols))}..{int(np.max(cols))}"


def release_pages(data) -> None:
    """Hand a memory map's resident pages back to the kernel (no-op for other arrays).

    The file stays in the page cache; only this process's resident set shrinks, so a pass
    over a long recording does not grow it to the file's size.
    """
    while data is not None and getattr(data, "_mmap", None) is None:
        data = getattr(data, "base", None)
    if data is not None and hasattr(data._mmap, "madvise"):
        data._mmap.madvise(mmap.MADV_DONTNEED)


def to_device(
    X: np.ndarray | torch.Tensor,
    device: torch.device,
    chunk_size: int | None = None,
    name: str = "X",
) -> torch.Tensor:
    """A float32 2-D tensor on ``device`` with the values of ``X``, copied in row chunks.

    Parameters
    ----------
    X : ndarray, memmap or torch.Tensor, shape (n_rows, n_columns)
        Input matrix. A torch tensor already on ``device`` in float32 is returned as is
        (no copy, and callers must not modify it). Numpy input is copied block by block:
        the device then holds the only full copy.
    device : torch.device
        Target device.
    chunk_size : int, optional
        Rows per transferred block (default about 256 MiB).
    name : str
        Name used in error messages.

    Returns
    -------
    tensor : torch.Tensor, shape (n_rows, n_columns), float32
        Possibly a transposed view of a contiguous device tensor (when ``X`` was a
        Fortran-ordered view, as ``memmap.T`` is).
    """
    if isinstance(X, NeuronBlocks):  # stays on disk; blocks are read where indexed
        return X
    if isinstance(X, torch.Tensor):
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
        return X.to(device=device, dtype=torch.float32)
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {X.dtype}")
    transposed = (not X.flags.c_contiguous) and X.flags.f_contiguous
    source = X.T if transposed else X  # C-ordered view either way
    out = torch.empty(source.shape, dtype=torch.float32, device=device)
    n_rows, n_columns = source.shape
    for rows in row_chunks(n_rows, default_chunk_rows(n_columns, chunk_size)):
        block = np.ascontiguousarray(source[rows], dtype=np.float32)
        if not block.flags.writeable:  # read-only memmap block: torch needs its own buffer
            block = block.copy()
        out[rows].copy_(torch.from_numpy(block))
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out.T if transposed else out


def column_mean(X: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """Mean of each column of ``X`` (n_rows, n_columns), accumulated in float64."""
    total = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    for rows in row_chunks(X.shape[0], chunk_rows):
        total += X[rows].sum(0, dtype=torch.float64)
    return total / X.shape[0]


def centered_gram(X: torch.Tensor, mean: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """``(X - mean).T @ (X - mean)``, shape (n_columns, n_columns), float64, by row chunks.

    Each chunk is centred in float32 (a chunk-sized temporary); partial products are
    summed in float64 so that millions of rows do not lose precision.
    """
    gram = torch.zeros(X.shape[1], X.shape[1], dtype=torch.float64, device=X.device)
    mean32 = mean.to(torch.float32)
    for rows in row_chunks(X.shape[0], chunk_rows):
        block = X[rows] - mean32
        gram += (block.T @ block).to(torch.float64)
    return gram



def validated_input(estimator, X, *, reset: bool, name: str = "X",
                    ensure_min_samples: int = 1):
    """``X`` checked with scikit-learn's rules, without a host copy of large numeric arrays.

    Sets (``reset=True``) or checks (``reset=False``) ``n_features_in_`` and
    ``feature_names_in_`` through :func:`sklearn.utils.validation.validate_data`. A 2-D
    numeric numpy array (a memmap included, float16 included) or torch tensor is returned
    as is: :func:`to_device` converts it block by block and rejects NaN/inf on the device.
    Anything else (lists, DataFrames, object or complex arrays, 1-D or empty arrays)
    goes through :func:`sklearn.utils.check_array`, which raises scikit-learn's usual
    messages ("Reshape your data", "0 sample(s)", "Complex data not supported"...).
    Sparse input is refused with a ``TypeError`` naming what is expected.

    Parameters
    ----------
    estimator : estimator being fitted or applied
    X : array-like, shape (n_samples, n_features)
    reset : bool
        True in ``fit``, False in ``transform``/``predict``.
    name : str
        Name used in error messages.
    ensure_min_samples : int
        Fewest rows accepted.

    Returns
    -------
    ndarray or torch.Tensor, shape (n_samples, n_features)
    """
    what = type(estimator).__name__
    if sparse.issparse(X):
        raise TypeError(f"{what} expects a dense (n_samples, n_features) array for {name}; got "
                        f"sparse input ({type(X).__name__}, shape {X.shape}), which is not "
                        "supported: convert it with .toarray()")
    if isinstance(X, NeuronBlocks):
        validate_data(estimator, X, reset=reset, skip_check_array=True)
        return X
    if isinstance(X, torch.Tensor):
        if X.ndim != 2:
            raise ValueError(f"{what} expects {name} as a 2-D (n_samples, n_features) tensor; got "
                             f"shape {tuple(X.shape)}. Reshape your data")
        if X.is_complex():
            raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
        if X.shape[0] < ensure_min_samples or X.shape[1] < 1:
            raise ValueError(f"Found tensor {name} with shape {tuple(X.shape)}; {what} needs at "
                             f"least {ensure_min_samples} sample(s) and 1 feature(s)")
        validate_data(estimator, X, reset=reset, skip_check_array=True)
        return X
    ndim = getattr(X, "ndim", 2)
    if ndim != 2:
        raise ValueError(f"{what} expects {name} as a 2-D (n_samples, n_features) array; got "
                         f"{ndim}-D input of shape {np.shape(X)}. Reshape your data, e.g. with "
                         "X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one sample")
    numeric = isinstance(X, np.ndarray) and (np.issubdtype(X.dtype, np.floating)
                                             or np.issubdtype(X.dtype, np.integer))
    if numeric and X.shape[0] >= ensure_min_samples and X.shape[1] >= 1:
        validate_data(estimator, X, reset=reset, skip_check_array=True)
        return X
    return validate_data(estimator, X, reset=reset, accept_sparse=False,
                         dtype=(np.float64, np.float32), ensure_min_samples=ensure_min_samples)


def output_dtype(X) -> np.dtype:
    """dtype of results computed (in float32 on the device) for input ``X``: float64 for
    float64 input, so that scikit-learn pipelines keep their precision, else float32."""
    dtype = getattr(X, "dtype", None)
    wide = dtype == torch.float64 if isinstance(X, torch.Tensor) else dtype == np.float64
    return np.dtype(np.float64) if wide else np.dtype(np.float32)


def fitted_input(estimator, X, fitted_attribute: str) -> tuple[torch.Tensor, torch.device, np.dtype]:
    """``X`` on the estimator's device, after checking it is fitted and ``X`` is as wide;
    also the dtype results should be returned in (:func:`output_dtype`).

    Parameters
    ----------
    estimator : fitted estimator with ``device``, ``chunk_size`` and ``n_features_in_``
    X : array, shape (n_samples, n_features)
    fitted_attribute : str
        Attribute that exists once the estimator is fitted (``components_``...).
    """
    check_is_fitted(estimator, fitted_attribute)
    device = resolve_device(estimator.device)
    X = validated_input(estimator, X, reset=False)
    return to_device(X, device, estimator.chunk_size), device, output_dtype(X)
