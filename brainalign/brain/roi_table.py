"""ROI tables as brain data: one column per region, one row per TR (text, TSV or CSV).

Many studies publish region time courses rather than images (e.g. the Brennan 2016 Alice
data: six spheres, whitespace-separated text). :class:`RoiTableMasker` gives them the same
masker contract as images; its inverse maps per-ROI values to a one-row-per-map table.
Parsing leans on pandas (:mod:`brainalign.brain.tables`), cleaning on nilearn.signal.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.utils import check_array

from brainalign.brain.base import CLEANING_PARAMETERS, BrainMasker
from brainalign.brain.tables import read_table


class RoiTableMasker(BrainMasker):
    __doc__ = """Masker for ROI time-course tables (n_tr rows x n_rois columns).

    Parameters
    ----------
    names : sequence of str, optional
        ROI names, one per column; default: the table's header, else ``roi000, roi001, ...``.
    delimiter : str, optional
        Column separator (default: guessed from the file, see :func:`read_table`).
    """ + CLEANING_PARAMETERS + """
    Attributes
    ----------
    n_targets_ : int
        Number of ROIs.
    n_features_in_ : int
        Number of ROIs (columns a table must have), as scikit-learn names it.
    target_names_ : list of str
    header_ : list of str or None
        The header of the table fitted on; tables read later with a header have their
        columns matched to it by name (same ROIs in another order are reordered, other
        ROIs are an error).
    space_ : str
        ``"roi"``.
    """

    def __init__(self, names: Sequence[str] | None = None, delimiter: str | None = None,
                 detrend: bool = False, standardize: Any = False, high_pass: float | None = None,
                 low_pass: float | None = None, t_r: float | None = None,
                 standardize_confounds: bool = True, run_lengths: Sequence[int] | None = None):
        super().__init__(detrend=detrend, standardize=standardize, high_pass=high_pass,
                         low_pass=low_pass, t_r=t_r, standardize_confounds=standardize_confounds,
                         run_lengths=run_lengths)
        self.names = names
        self.delimiter = delimiter

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # a region's time course may hold NaN: it is passed through, and load_brain reports
        # and excludes such targets (as EncodingModel does)
        tags.input_tags.allow_nan = True
        return tags

    def _sklearn_expected_failed_checks(self) -> dict[str, str]:
        """scikit-learn estimator checks expected to fail, with the reason (pass it as
        ``expected_failed_checks`` to ``check_estimator``/``parametrize_with_checks``)."""
        return {
            "check_transformer_data_not_an_array": (
                "a masker takes tables (files, DataFrames, arrays) and a list or tuple of "
                "them is one table per run, so a list of rows is read as many one-row runs"),
            "check_fit1d": (
                "a 1-D array is one ROI's time course (n_tr,), read as a one-column table"),
        }

    def _is_run_list(self, imgs) -> bool:
        return isinstance(imgs, (list, tuple))

    def _table(self, img) -> tuple[np.ndarray, list[str] | None]:
        """Values (n_tr, n_rois) and header of one table; arrays are checked as scikit-learn
        checks them (dense, numeric, not complex), and every table must be non-empty."""
        if not (isinstance(img, (str, pd.DataFrame)) or hasattr(img, "__fspath__")):
            img = check_array(img, accept_sparse=False, ensure_2d=False, dtype="numeric",
                              ensure_all_finite=False, input_name="table")
        values, header = read_table(img, self.delimiter)
        check_array(values, ensure_all_finite=False, input_name="table")  # no empty table
        return values, header

    def _read_one(self, img) -> np.ndarray:
        values, header = self._table(img)
        fitted = getattr(self, "header_", None)
        if header is not None and fitted is not None and header != fitted:
            values = self._reorder(values, header, fitted, img)
        if hasattr(self, "n_targets_") and values.shape[1] != self.n_targets_:
            hint = (" A 1-D array is read as one ROI's time course; if it holds one TR of "
                    "several ROIs, Reshape your data with array.reshape(1, -1)."
                    if np.ndim(img) == 1 and not isinstance(img, str) else "")
            raise ValueError(f"X has {values.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_targets_} features as input: the table has "
                             f"{values.shape[1]} ROI columns, the masker was fitted with "
                             f"{self.n_targets_}.{hint}")
        return values

    @staticmethod
    def _reorder(values: np.ndarray, header: list[str], fitted: list[str], img) -> np.ndarray:
        """A table's columns in the fitted table's order, matched by name: a table that
        lists the same ROIs in another order is read right; other ROIs are an error (taken
        by position, they would put one region's values under another's name)."""
        if sorted(header) != sorted(fitted) or len(set(header)) != len(header):
            missing = [name for name in fitted if name not in header]
            extra = [name for name in header if name not in fitted]
            where = f" {img}" if isinstance(img, str) or hasattr(img, "__fspath__") else ""
            raise ValueError(f"the ROI table{where} names other columns than the table the "
                             f"masker was fitted on: missing {missing}, not expected {extra} "
                             f"(header {header}, fitted {fitted})")
        return values[:, [header.index(name) for name in fitted]]

    def _count_one(self, img) -> int:
        return len(read_table(img, self.delimiter)[0])

    def fit(self, imgs=None, y=None) -> "RoiTableMasker":
        """Learn the number of ROIs and their names from a table (or from ``names``).

        Parameters
        ----------
        imgs : path, DataFrame, array (n_tr, n_rois), or a list of those (one per run), optional
        """
        header = None
        if self._is_run_list(imgs) and len(imgs) == 0:
            raise ValueError("RoiTableMasker.fit got an empty list of runs; expected a table "
                             "(path, DataFrame or array (n_tr, n_rois)) or a list of them, "
                             "one per run")
        if imgs is not None:
            first = imgs[0] if self._is_run_list(imgs) else imgs
            values, header = self._table(first)
            n_targets = values.shape[1]
        elif self.names is not None:
            n_targets = len(self.names)
        else:
            raise ValueError("RoiTableMasker.fit needs a table or `names`")
        if self.names is not None:
            if len(self.names) != n_targets:
                raise ValueError(f"names has {len(self.names)} entries but the table has "
                                 f"{n_targets} columns")
            self.target_names_ = [str(n) for n in self.names]
        else:
            self.target_names_ = header or [f"roi{i:03d}" for i in range(n_targets)]
        self.header_ = header  # later tables' columns are matched to it by name
        self.n_targets_ = n_targets
        self.n_features_in_ = n_targets
        self.space_ = "roi"
        return self

    def inverse_transform(self, values) -> pd.DataFrame:
        """Per-ROI values as a table.

        Parameters
        ----------
        values : array, shape (n_rois,) or (n_maps, n_rois)

        Returns
        -------
        pandas.DataFrame, shape (n_maps, n_rois) (one row for 1-D input), columns = ROI names
        """
        values, _ = self._check_values(values)
        return pd.DataFrame(values, columns=self.target_names_)
