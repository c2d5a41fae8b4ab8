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
    target_names_ : list of str
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

    def _is_run_list(self, imgs) -> bool:
        return isinstance(imgs, (list, tuple))

    def _read_one(self, img) -> np.ndarray:
        return read_table(img, self.delimiter)[0]

    def _count_one(self, img) -> int:
        return len(read_table(img, self.delimiter)[0])

    def fit(self, imgs=None, y=None) -> "RoiTableMasker":
        """Learn the number of ROIs and their names from a table (or from ``names``).

        Parameters
        ----------
        imgs : path, DataFrame, array (n_tr, n_rois), or a list of those (one per run), optional
        """
        header = None
        if imgs is not None:
            first = imgs[0] if self._is_run_list(imgs) else imgs
            values, header = read_table(first, self.delimiter)
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
        self.n_targets_ = n_targets
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
