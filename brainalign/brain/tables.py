"""Reading numeric text tables (ROI time courses, confounds): whitespace, TSV or CSV,
with or without a header row. Leans on pandas for parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_table(source, delimiter: str | None = None) -> tuple[np.ndarray, list[str] | None]:
    """Numeric table from a file, a DataFrame or an array.

    Parameters
    ----------
    source : path, pandas.DataFrame or array (n_rows, n_columns)
    delimiter : str, optional
        Column separator. Default: tab for ``.tsv``, comma for ``.csv``, otherwise tab if
        the first line holds one, else any whitespace.

    Returns
    -------
    values : ndarray, shape (n_rows, n_columns), float64
    names : list of str or None
        Column names from a header row (a first line with a non-numeric entry) or the
        DataFrame's columns; None when the table has none.
    """
    if isinstance(source, pd.DataFrame):
        return source.to_numpy(dtype=np.float64), [str(c) for c in source.columns]
    if not (isinstance(source, str) or hasattr(source, "__fspath__")):
        values = np.asarray(source, dtype=np.float64)
        return (values[:, None] if values.ndim == 1 else values), None
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    with open(path) as handle:
        first = next((line for line in handle if line.strip()), "")
    if delimiter is None:
        if path.suffix == ".tsv" or "\t" in first:
            delimiter = "\t"
        elif path.suffix == ".csv":
            delimiter = ","
    tokens = first.strip().split(delimiter) if delimiter else first.split()
    has_header = any(not _is_number(t.strip()) for t in tokens)
    frame = pd.read_csv(path, sep=delimiter if delimiter else r"\s+",
                        header=0 if has_header else None, engine="python" if not delimiter else "c")
    names = [str(c).strip() for c in frame.columns] if has_header else None
    try:
        values = frame.to_numpy(dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"table {path} holds non-numeric entries below its first line: {err}") from err
    return values, names
