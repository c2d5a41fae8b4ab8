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
  hold (a reference corpus of 100k words is 20,000 TRs): a standardised
  ``(n_neurons, n_tr)`` matrix in a scratch file whose row blocks are read when the
  estimators index them, with the pages handed back to the kernel after every read, so
  resident memory is one block, whatever the corpus length.

Plain torch; no other library.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from scipy import sparse
from sklearn.utils.validation import check_is_fitted, validate_data

#: Number of float32 values a default row chunk may hold (256 MiB).
DEFAULT_CHUNK_VALUES = 1 << 26
#: Values per block of TRs when :class:`NeuronBlocks` streams a recording (64 MiB).
_SETUP_BLOCK_VALUES = 1 << 24


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
    """Standardised neuron time courses kept on disk, neuron-major, read a block at a time.

    The out-of-core counterpart of the ``(n_neurons, n_rows)`` device copy that study A's
    estimators work on. :meth:`standardized` streams the chosen rows (TRs) of a
    ``(n_tr, n_neurons)`` recording once to learn each neuron's mean and norm, and once
    more to write the standardised values, transposed, to a float32 scratch file
    (``n_neurons x n_rows``, deleted with the object; 4 bytes per value, as big as the
    float32 recording itself): every later read is then one
    contiguous slab. ``blocks[a:b]`` is neurons ``a..b-1`` as a float32 ``(b - a, n_rows)``
    tensor on ``device``; an integer or an index array reads single neurons. After each
    read or write the memory maps' pages are released (``madvise(MADV_DONTNEED)``), so the
    process holds one block, however long the recording; the estimators' chunked loops
    (codes, sufficient statistics, distances) make one pass over the file each.

    Parameters
    ----------
    matrix : np.memmap, shape (n_neurons, n_rows), float32
        The standardised, neuron-major values.
    mean, scale : ndarray, shape (n_neurons,)
        Per-neuron centre and scale that were applied (``(x - mean) / scale``).
    device : torch.device
    scratch : tempfile.TemporaryDirectory, optional
        Folder of ``matrix``, removed when the object is deleted.
    """

    ndim = 2
    dtype = torch.float32

    def __init__(self, matrix: np.memmap, mean: np.ndarray, scale: np.ndarray,
                 device: torch.device, scratch=None):
        self.matrix = matrix
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.device = torch.device(device)
        self.shape = tuple(int(n) for n in matrix.shape)
        self._scratch = scratch

    @classmethod
    def standardized(cls, data, rows: np.ndarray, device: torch.device, standardize: bool = True,
                     directory: str | Path | None = None) -> "NeuronBlocks":
        """The neuron-major, standardised copy of ``data[rows]`` in a scratch file.

        Parameters
        ----------
        data : ndarray or np.memmap, shape (n_tr, n_neurons)
        rows : ndarray of int, shape (n_rows,)
            TRs to use (e.g. the training TRs).
        device : torch.device
        standardize : bool
            Centre each neuron and scale it to unit L2 norm over ``rows``; False keeps the
            raw values (mean 0, scale 1).
        directory : path, optional
            Where the scratch folder goes (default: the system's temporary folder).

        Notes
        -----
        The mean and norm are accumulated in float64 about each neuron's first value (a
        shift that avoids cancellation), in one pass over blocks of TRs; non-finite values
        are refused there, naming the TRs.
        """
        rows = np.asarray(rows)
        n_neurons = int(data.shape[1])
        tr_blocks = list(row_chunks(len(rows), max(1, _SETUP_BLOCK_VALUES // n_neurons)))
        mean, scale = np.zeros(n_neurons), np.ones(n_neurons)
        if standardize:
            shift = _read_trs(data, rows[:1])[0].astype(np.float64)
            total, squares = np.zeros(n_neurons), np.zeros(n_neurons)
            for block in tr_blocks:
                values = _read_trs(data, rows[block])
                values -= shift.astype(np.float32)
                total += values.sum(0, dtype=np.float64)
                squares += np.einsum("ij,ij->j", values, values, dtype=np.float64)
            mean = shift + total / len(rows)
            norm = np.sqrt(np.maximum(squares - total ** 2 / len(rows), 0.0))
            scale = np.where(norm > 1e-12 * np.maximum(1.0, np.abs(mean)), norm, 1.0)
        scratch = tempfile.TemporaryDirectory(prefix="brainalign-neurons-", dir=directory)
        path = Path(scratch.name) / "neurons.f32"
        mean32, scale32 = mean.astype(np.float32), scale.astype(np.float32)
        row_bytes = 4 * len(rows)
        # plain positional writes: a memory map written one strip of TRs at a time would
        # fault in (and keep resident) the whole file
        with open(path, "wb") as handle:
            handle.truncate(n_neurons * row_bytes)
            for block in tr_blocks:
                values = _read_trs(data, rows[block], check=not standardize)
                values -= mean32
                values /= scale32
                strips = np.ascontiguousarray(values.T)  # (n_neurons, block length)
                for neuron in range(n_neurons):
                    os.pwrite(handle.fileno(), strips[neuron], neuron * row_bytes + 4 * block.start)
        matrix = np.memmap(path, dtype=np.float32, mode="r", shape=(n_neurons, len(rows)))
        return cls(matrix, mean, scale, device, scratch)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if isinstance(index, slice) and index.step in (None, 1):  # a block: one plain read
            start, stop, _ = index.indices(self.shape[0])
            values = np.fromfile(self.matrix.filename, dtype=np.float32,
                                 count=max(0, stop - start) * self.shape[1],
                                 offset=4 * start * self.shape[1]).reshape(-1, self.shape[1])
        else:  # single neurons
            if not isinstance(index, (slice, int, np.integer)):
                index = np.asarray(index, dtype=np.int64)
            values = np.array(self.matrix[index], dtype=np.float32)
            release_pages(self.matrix)
        return torch.from_numpy(values).to(self.device)


def row_index(rows: np.ndarray) -> slice | np.ndarray:
    """``rows`` as a slice when they are consecutive and increasing (a memory map reads a
    slice in one sweep), else unchanged (any order, repeats kept)."""
    rows = np.asarray(rows)
    if len(rows) and np.all(np.diff(rows) == 1):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _read_trs(data, rows: np.ndarray, check: bool = True) -> np.ndarray:
    """``data[rows]`` (n_rows, n_neurons) as float32, with the map's pages released."""
    values = np.array(data[row_index(rows)], dtype=np.float32)
    release_pages(data)
    if check and not np.isfinite(values).all():
        bad = sorted(set(int(rows[i]) for i in np.nonzero(~np.isfinite(values))[0][:5]))
        raise ValueError(f"time courses contain NaN or inf (at TRs {bad}...)")
    return values


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
