"""Figures of a study report, drawn with matplotlib (Agg) and nilearn from plain arrays.

Each function returns a ``matplotlib.figure.Figure``; :mod:`brainalign.report.html` embeds
them as PNG. Brain maps use nilearn's static plotting: ``plot_surf_stat_map`` on the
fsaverage5 inflated mesh bundled with nilearn (lateral and medial views, sulcal depth
beneath), ``plot_stat_map`` over nilearn's MNI152 template for volumes and
``plot_glass_brain`` for small multiples. Every map has a colour bar labelled with its
units.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def atom_timecourses(atoms: np.ndarray, tr_s: float, run_lengths: Sequence[int] | None = None,
                     units: str = "a.u.") -> plt.Figure:
    """Stacked time courses of every atom, with the joins between runs marked.

    Each trace is scaled to its own peak |value| so that all are legible; the peak is
    written beside the atom's name, in ``units``.

    Parameters
    ----------
    atoms : ndarray, shape (n_tr, n_atoms)
        The runs one after another.
    tr_s : float
        Repetition time, seconds (x axis in seconds).
    run_lengths : sequence of int, optional
        TRs per run (summing to n_tr): a dashed line is drawn where each run ends.
    units : str
        Unit of the atom values (stated in the tick labels and the axis label).
    """
    n_tr, n_atoms = atoms.shape
    if run_lengths is not None and int(np.sum(run_lengths)) != n_tr:
        raise ValueError(f"run_lengths sum to {int(np.sum(run_lengths))} TRs but the atoms "
                         f"have {n_tr}")
    times = np.arange(n_tr) * tr_s
    spacing = 0.6 if n_atoms <= 16 else max(0.18, 10.0 / n_atoms)
    fig, ax = plt.subplots(figsize=(9, spacing * n_atoms + 1.2))
    peaks = np.abs(atoms).max(axis=0)
    for k in range(n_atoms):
        ax.plot(times, atoms[:, k] / (peaks[k] or 1.0) * 0.45 - k, lw=0.7)
    for end in np.cumsum(run_lengths)[:-1] if run_lengths is not None else ():
        ax.axvline(end * tr_s - tr_s / 2, color="black", ls="--", lw=0.8)
    fontsize = 8 if n_atoms <= 24 else 6
    ax.set_yticks(-np.arange(n_atoms), [f"atom{k:02d} (peak {peaks[k]:.2g})"
                                        for k in range(n_atoms)], fontsize=fontsize)
    ax.set_ylim(-n_atoms + 0.4, 0.6)
    ax.set_xlabel("time from the first TR (s)")
    ax.set_ylabel(f"atom value / its peak ({units})")
    runs = "" if run_lengths is None else f"; dashed lines: run boundaries ({len(run_lengths)} runs)"
    ax.set_title(f"All {n_atoms} atom time courses{runs}", fontsize=10)
    fig.tight_layout()
    return fig


def heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
            title: str, cbar_label: str, marks: np.ndarray | None = None,
            cmap: str = "viridis") -> plt.Figure:
    """A labelled heat map; ``marks`` (same shape, bool) puts a star in significant cells.

    At most 16 x 16 inches, with about 40 labels per axis at most (every k-th beyond that).
    With the signed colour map (:data:`SIGNED_CMAP`) the scale is symmetric around 0, so
    white is 0 and red and blue keep their signs whatever the data's range.

    Parameters
    ----------
    matrix : ndarray, shape (n_rows, n_cols)
    """
    n_rows, n_cols = matrix.shape
    fig, ax = plt.subplots(figsize=(min(16, max(4, 0.45 * n_cols + 2.5)),
                                    min(16, max(3, 0.28 * n_rows + 1.5))))
    scale = {}
    if cmap == SIGNED_CMAP:
        vmax = _abs_max(matrix)
        scale = dict(vmin=-vmax, vmax=vmax)
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, interpolation="nearest", **scale)
    col_step, row_step = max(1, n_cols // 40), max(1, n_rows // 40)  # at most ~40 labels
    ax.set_xticks(range(0, n_cols, col_step), list(col_labels)[::col_step], rotation=60,
                  ha="right", fontsize=8)
    ax.set_yticks(range(0, n_rows, row_step), list(row_labels)[::row_step], fontsize=8)
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
    markers = "os^Dv<>p"
    for index, (label, values) in enumerate(series.items()):
        marker = markers[index % len(markers)]
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


#: The four views of a surface map: (hemisphere, view), left to right on the page.
SURFACE_VIEWS = (("left", "lateral"), ("left", "medial"), ("right", "medial"), ("right", "lateral"))


def _fsaverage5():
    """nilearn's bundled fsaverage5 inflated mesh and sulcal depth, and the left vertex count."""
    from nilearn import datasets

    mesh = datasets.load_fsaverage("fsaverage5")
    sulcal = datasets.load_fsaverage_data(mesh="fsaverage5", data_type="sulcal")
    return mesh, sulcal, mesh["pial"].parts["left"].n_vertices


#: Colour maps of signed maps (r, coefficients) and of maps >= 0 (shares, counts).
SIGNED_CMAP, POSITIVE_CMAP = "RdBu_r", "YlOrRd"


def _abs_max(values) -> float:
    """Largest finite |value| (1 when there is none or it is 0): the colour scale's end."""
    values = np.abs(np.asarray(values, dtype=float))
    return float(np.nanmax(values, initial=0.0, where=np.isfinite(values))) or 1.0


def _colorbar(fig, axes, vmax: float, units: str, cmap: str = SIGNED_CMAP,
              positive: bool = False) -> None:
    """One colour bar for panels drawn with ``cmap`` on [-vmax, vmax] (on [0, vmax] when
    ``positive``): beside ``axes``, or in ``axes`` itself when it is a single dedicated axis
    (``cax``)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    _place_colorbar(fig, ScalarMappable(norm=Normalize(0.0 if positive else -vmax, vmax),
                                        cmap=cmap), axes, label=units)


def _place_colorbar(fig, mappable, axes, shrink: float = 0.7, **options):
    """The colour bar of ``mappable``: in ``axes`` when it is one dedicated axis (``cax``),
    else beside the panels ``axes``."""
    if isinstance(axes, plt.Axes):
        return fig.colorbar(mappable, cax=axes, **options)
    return fig.colorbar(mappable, ax=axes, shrink=shrink, pad=0.02, **options)


def surface_map(values: np.ndarray, title: str, threshold: float | None = None,
                units: str = "", positive: bool = False) -> plt.Figure:
    """Lateral and medial views of both hemispheres of fsaverage5, with a colour bar.

    Parameters
    ----------
    values : ndarray, shape (20484,)
        Left hemisphere's 10,242 vertices, then the right's.
    threshold : float, optional
        |values| below it are not coloured (the sulcal depth shows through).
    units : str
        Colour bar label (what the values are, in which unit).
    positive : bool
        Values are >= 0 (shares, counts): a sequential colour scale from 0, not a
        diverging one around 0.
    """
    from nilearn import plotting

    n_left = _fsaverage5()[2]
    if values.shape != (2 * n_left,):
        raise ValueError(f"surface_map expects {2 * n_left} fsaverage5 values (left then right), "
                         f"got shape {values.shape}")
    vmax = _abs_max(values)
    cmap = POSITIVE_CMAP if positive else SIGNED_CMAP
    scale = dict(vmin=0.0, vmax=vmax, symmetric_cbar=False) if positive else dict(
        vmax=vmax, symmetric_cbar=True)
    fig, axes = _four_views(values, title, plotting.plot_surf_stat_map, threshold=threshold,
                            cmap=cmap, **scale)
    _colorbar(fig, axes, vmax, units, cmap=cmap, positive=positive)
    return fig


def _four_views(values: np.ndarray, title: str, plot, **options):
    """``plot`` (a nilearn surface function) of fsaverage5 ``values`` (left then right) in
    the SURFACE_VIEWS, sulcal depth beneath; returns the figure and its four axes."""
    mesh, sulcal, n_left = _fsaverage5()
    fig, axes = plt.subplots(1, 4, subplot_kw={"projection": "3d"}, figsize=(13, 3.4))
    halves = {"left": values[:n_left], "right": values[n_left:]}
    for ax, (hemi, view) in zip(axes, SURFACE_VIEWS):
        plot(mesh["inflated"].parts[hemi], halves[hemi], hemi=hemi, view=view,
             bg_map=sulcal.data.parts[hemi], axes=ax, figure=fig, colorbar=False, **options)
        ax.set_title(f"{hemi} {view}", fontsize=9)
    fig.suptitle(title)
    return fig, axes


def _label_colours(n_labels: int):
    """A qualitative colour map for labels 1..n_labels (each its own colour), and its
    boundaries' norm: tab10, tab20, then tab20 + tab20b + tab20c (60 colours), then hues
    sampled evenly around the colour wheel."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    if n_labels <= 20:
        base = plt.get_cmap("tab10" if n_labels <= 10 else "tab20")
        colours = [base(i) for i in range(n_labels)]
    elif n_labels <= 60:
        colours = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b", "tab20c")
                   for i in range(20)][:n_labels]
    else:
        colours = [plt.get_cmap("hsv")(i / n_labels) for i in range(n_labels)]
    cmap = ListedColormap(colours)
    return cmap, BoundaryNorm(np.arange(0.5, n_labels + 1), n_labels)


def _label_colorbar(fig, axes, names: Sequence[str], units: str) -> None:
    """A colour bar with one labelled block per name (labels 1..len(names)): beside ``axes``,
    or in ``axes`` itself when it is a single dedicated axis (``cax``)."""
    from matplotlib.cm import ScalarMappable

    cmap, norm = _label_colours(len(names))
    bar = _place_colorbar(fig, ScalarMappable(norm=norm, cmap=cmap), axes, shrink=0.8,
                          ticks=np.arange(1, len(names) + 1), label=units)
    bar.ax.set_yticklabels(list(names), fontsize=8)


def surface_labels(labels: np.ndarray, names: Sequence[str], title: str,
                   units: str = "") -> plt.Figure:
    """A label map on fsaverage5 (lateral and medial views of both hemispheres): each
    vertex coloured by its label, one colour per name, unlabelled vertices uncoloured.

    Parameters
    ----------
    labels : ndarray of int, shape (20484,)
        0 (no label) or 1..len(names): the index of the vertex's name, plus one.
    names : sequence of str
    """
    from nilearn import plotting

    n_left = _fsaverage5()[2]
    labels = np.asarray(labels)
    if labels.shape != (2 * n_left,) or labels.min() < 0 or labels.max() > len(names):
        raise ValueError(f"surface_labels expects {2 * n_left} fsaverage5 labels in "
                         f"0..{len(names)}, got shape {labels.shape} and range "
                         f"[{labels.min()}, {labels.max()}]")
    cmap, _ = _label_colours(len(names))
    fig, axes = _four_views(labels.astype(float), title, plotting.plot_surf_roi, cmap=cmap,
                            vmin=0.5, vmax=len(names) + 0.5, threshold=0.5)
    _label_colorbar(fig, axes, names, units)
    return fig


def volume_labels(image, names: Sequence[str], title: str, units: str = "",
                  bg_img=None) -> plt.Figure:
    """A 3D label image (0 none, 1..len(names)) as orthogonal slices over the MNI template,
    one colour per name, with a labelled colour bar."""
    from nilearn import plotting

    cmap, _ = _label_colours(len(names))
    fig = plt.figure(figsize=(10, 3))
    plotting.plot_roi(image, bg_img=mni_template() if bg_img is None else bg_img, title=title,
                      figure=fig, axes=fig.add_axes((0.0, 0.0, 0.72, 1.0)), display_mode="ortho",
                      cmap=cmap, vmin=0.5, vmax=len(names) + 0.5, colorbar=False, alpha=0.8,
                      threshold=0.5)
    _label_colorbar(fig, fig.add_axes((0.74, 0.1, 0.015, 0.8)), names, units)
    return fig


def surface_maps_lateral(maps: np.ndarray, titles: Sequence[str], units: str = "") -> plt.Figure:
    """Small multiples: lateral views of both hemispheres for each of several maps.

    Parameters
    ----------
    maps : ndarray, shape (n_maps, 20484)
        fsaverage5 values, left hemisphere then right, one row per map; all share one
        symmetric colour scale.
    titles : sequence of str, length n_maps
    """
    from nilearn import plotting

    mesh, sulcal, n_left = _fsaverage5()
    n_maps = len(maps)
    n_columns = 4  # two maps per row, two views each
    n_rows = -(-n_maps // 2)
    fig, axes = plt.subplots(n_rows, n_columns, subplot_kw={"projection": "3d"},
                             figsize=(12, 2.4 * n_rows + 0.6), squeeze=False)
    vmax = _abs_max(maps)
    for index, ax in enumerate(axes.flat):
        k, hemi = index // 2, ("left", "right")[index % 2]
        if k >= n_maps:
            ax.set_axis_off()
            continue
        part = maps[k, :n_left] if hemi == "left" else maps[k, n_left:]
        plotting.plot_surf_stat_map(
            mesh["inflated"].parts[hemi], part, hemi=hemi, view="lateral", vmax=vmax,
            symmetric_cbar=True, cmap=SIGNED_CMAP, bg_map=sulcal.data.parts[hemi], axes=ax,
            figure=fig, colorbar=False)
        ax.set_title(f"{titles[k]}\n({hemi})", fontsize=8)
    _colorbar(fig, axes, vmax, units)
    return fig


def volume_map(image, title: str, threshold: float | None = 1e-6, units: str = "",
               bg_img=None, positive: bool = False) -> plt.Figure:
    """Orthogonal slices of a 3D NIfTI image over an anatomical template.

    Parameters
    ----------
    image : Nifti1Image, 3D
    threshold : float, optional
        |values| below it are transparent; the default hides the zeros outside the mask,
        which would otherwise cover the template.
    units : str
        Colour bar label.
    bg_img : Nifti1Image, optional
        Underlay; default nilearn's MNI152 (ICBM 2009) template, see :func:`mni_template`.
    positive : bool
        Values are >= 0 (shares, counts): a sequential colour scale from 0. Otherwise the
        scale is symmetric around 0, as on surfaces (nilearn's automatic scale would run
        from 0 for a map without negative values and colour positive t values blue).
    """
    from nilearn import plotting

    fig = plt.figure(figsize=(8, 3))
    vmax = _abs_max(image.dataobj)
    scale = (dict(cmap=POSITIVE_CMAP, vmin=0.0, vmax=vmax, symmetric_cbar=False) if positive
             else dict(cmap=SIGNED_CMAP, vmax=vmax, symmetric_cbar=True))
    display = plotting.plot_stat_map(image, bg_img=mni_template() if bg_img is None else bg_img,
                                     threshold=threshold, title=title, figure=fig,
                                     display_mode="ortho", colorbar=True, **scale)
    if units and getattr(display, "_cbar", None) is not None:
        display._cbar.set_label(units)
    return fig


#: The underlay of volume figures, as named in their captions (nilearn's bundled files are
#: ``mni_icbm152_*_tal_nlin_sym_09a``; see ``brainalign.brain.volume.NILEARN_MNI_SPACE``).
MNI_TEMPLATE_NAME = "nilearn's MNI152 template (MNI152NLin2009aSym, 1 mm)"


def mni_template():
    """The anatomical underlay of volume figures (nilearn's bundled MNI152 template)."""
    from nilearn import datasets

    return datasets.load_mni152_template(resolution=1)


def glass_brains(images: Sequence, titles: Sequence[str], units: str = "") -> plt.Figure:
    """Small multiples of 3D images as glass brains (left, coronal and axial projections)."""
    from nilearn import plotting

    n_maps = len(images)
    n_rows = -(-n_maps // 2)
    fig = plt.figure(figsize=(12, 2.2 * n_rows + 0.4))
    vmax = _abs_max(np.concatenate([np.ravel(img.dataobj) for img in images]))
    height = 1.0 / n_rows
    for k, (image, title) in enumerate(zip(images, titles)):
        row, column = divmod(k, 2)
        ax = fig.add_axes((0.01 + 0.45 * column, 1 - (row + 1) * height, 0.44, height * 0.95))
        plotting.plot_glass_brain(image, axes=ax, figure=fig, display_mode="ortho", plot_abs=False,
                                  vmax=vmax, symmetric_cbar=True, cmap=SIGNED_CMAP, colorbar=False,
                                  threshold=1e-6, title=title, annotate=False)
    _colorbar(fig, fig.add_axes((0.93, 0.15, 0.012, 0.7)), vmax, units)
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
