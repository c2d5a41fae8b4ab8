"""Figures of a study report, drawn with matplotlib (Agg) and nilearn from plain arrays.

Each function returns a ``matplotlib.figure.Figure``; :mod:`brainalign.report.html` embeds
them as PNG. Brain maps use nilearn's static plotting (``plot_surf_stat_map`` on the
fsaverage5 mesh bundled with nilearn, ``plot_stat_map`` for volumes).
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def atom_timecourses(atoms: np.ndarray, tr_s: float, n_show: int = 8) -> plt.Figure:
    """Stacked time courses of the first ``n_show`` atoms.

    Parameters
    ----------
    atoms : ndarray, shape (n_tr, n_atoms)
    tr_s : float
        Repetition time, seconds (x axis in seconds).
    """
    n_show = min(n_show, atoms.shape[1])
    times = np.arange(atoms.shape[0]) * tr_s
    fig, ax = plt.subplots(figsize=(9, 0.6 * n_show + 1))
    for k in range(n_show):
        trace = atoms[:, k]
        scale = np.abs(trace).max() or 1.0
        ax.plot(times, trace / scale * 0.4 - k, lw=0.8)
    ax.set_yticks(-np.arange(n_show), [f"atom {k}" for k in range(n_show)])
    ax.set_xlabel("time (s)")
    ax.set_title(f"Atom time courses (first {n_show} of {atoms.shape[1]})")
    fig.tight_layout()
    return fig


def heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
            title: str, cbar_label: str, marks: np.ndarray | None = None,
            cmap: str = "viridis") -> plt.Figure:
    """A labelled heat map; ``marks`` (same shape, bool) puts a star in significant cells.

    Parameters
    ----------
    matrix : ndarray, shape (n_rows, n_cols)
    """
    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * n_cols + 2.5), max(3, 0.28 * n_rows + 1.5)))
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(n_cols), list(col_labels), rotation=60, ha="right", fontsize=8)
    step = max(1, n_rows // 40)
    ax.set_yticks(range(0, n_rows, step), list(row_labels)[::step], fontsize=8)
    if marks is not None:
        rows, cols = np.nonzero(marks)
        ax.scatter(cols, rows, marker="*", s=40, c="white", edgecolors="black", linewidths=0.5)
    fig.colorbar(image, ax=ax, label=cbar_label)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def recovery_curve(snr: Sequence[float], accuracy: Sequence[float],
                   best_r: Sequence[float] | None = None) -> plt.Figure:
    """Assignment accuracy against SNR (and the best target's held-out r when given)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(snr, accuracy, "o-", label="assignment accuracy")
    if best_r is not None:
        ax.plot(snr, best_r, "s--", label="best held-out r")
    ax.set_xscale("log")
    ax.set_xlabel("SNR")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    fig.tight_layout()
    return fig


def stability_vs_k(candidates: Sequence[int], series: dict[str, Sequence[float | None]],
                   chosen: int | None = None) -> plt.Figure:
    """Stability of the atoms against the number of atoms K, one line per measure.

    Parameters
    ----------
    candidates : sequence of int
        K (x axis).
    series : dict
        Label -> one value per candidate (None or NaN: not computed, left as a gap).
    chosen : int, optional
        The study's K, marked with a vertical line.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for (label, values), marker in zip(series.items(), "os^Dv<>p"):
        values = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(candidates, values, marker=marker, ls="-", label=label)
    if chosen is not None:
        ax.axvline(chosen, color="grey", ls=":", lw=1, label=f"study K = {chosen}")
    ax.set_xticks(list(candidates))
    ax.set_xlabel("number of atoms K")
    ax.set_ylabel("stability (|r| or ARI)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def surface_map(values: np.ndarray, title: str, threshold: float | None = None) -> plt.Figure:
    """Lateral views of both hemispheres of fsaverage5 (nilearn's bundled mesh).

    Parameters
    ----------
    values : ndarray, shape (20484,)
        Left hemisphere's 10,242 vertices, then the right's.
    """
    from nilearn import datasets, plotting

    fsaverage = datasets.load_fsaverage("fsaverage5")
    sulcal = datasets.load_fsaverage_data(mesh="fsaverage5", data_type="sulcal")
    n_left = fsaverage["pial"].parts["left"].n_vertices
    if values.shape != (2 * n_left,):
        raise ValueError(f"surface_map expects {2 * n_left} fsaverage5 values (left then right), "
                         f"got shape {values.shape}")
    fig, axes = plt.subplots(1, 2, subplot_kw={"projection": "3d"}, figsize=(8, 3.5))
    vmax = float(np.nanmax(np.abs(values))) or 1.0
    for ax, hemi, part in zip(axes, ("left", "right"), (values[:n_left], values[n_left:])):
        plotting.plot_surf_stat_map(
            fsaverage["inflated"].parts[hemi],
            part, hemi=hemi, view="lateral", threshold=threshold, vmax=vmax,
            bg_map=sulcal.data.parts[hemi], axes=ax, figure=fig, colorbar=False)
    fig.suptitle(title)
    return fig


def volume_map(image, title: str, threshold: float | None = None) -> plt.Figure:
    """Orthogonal slices of a 3D NIfTI image on the MNI template (nilearn ``plot_stat_map``)."""
    from nilearn import plotting

    fig = plt.figure(figsize=(8, 3))
    plotting.plot_stat_map(image, threshold=threshold, title=title, figure=fig,
                           display_mode="ortho", colorbar=True)
    return fig


def roi_bars(values: np.ndarray, names: Sequence[str], title: str, ylabel: str,
             marks: np.ndarray | None = None) -> plt.Figure:
    """One bar per ROI; ``marks`` (bool, same length) colours significant ROIs and stars them.

    Parameters
    ----------
    values : ndarray, shape (n_rois,)
        NaN bars are left empty.
    names : sequence of str, length n_rois
    """
    values = np.asarray(values, dtype=float)
    marks = np.zeros(len(values), bool) if marks is None else np.asarray(marks, bool)
    fig, ax = plt.subplots(figsize=(min(14, max(5, 0.12 * len(values) + 2)), 3.5))
    positions = np.arange(len(values))
    ax.bar(positions, np.nan_to_num(values), color=np.where(marks, "#c0392b", "#9aa7b8"))
    if marks.any():
        ax.scatter(positions[marks], np.nan_to_num(values[marks]), marker="*", s=40, c="black",
                   zorder=3)
    step = max(1, len(values) // 40)
    ax.set_xticks(positions[::step], list(names)[::step], rotation=90, fontsize=7)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig
