"""Figures of network atlases and pattern -> network mappings, saved as PNG.

Leans on nilearn's plotting (``plot_roi`` for volumes, ``plot_surf_roi`` /
``plot_surf_stat_map`` on nilearn's bundled fsaverage5 inflated mesh for surfaces) and
matplotlib for the pattern x network matrix. Figures are built on
:class:`matplotlib.figure.Figure` objects and written with the Agg canvas, so no global
pyplot state or interactive backend is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from brainalign.networks.atlases import FSAVERAGE_VERTICES, Atlas
from brainalign.networks.mapping import NetworkMapping


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_pattern_network_matrix(mapping: NetworkMapping, path: str | Path,
                                statistic: str | None = None) -> Path:
    """Heat map of one statistic, patterns x networks; cells with FDR p < alpha (over each
    pattern's networks) starred.

    Parameters
    ----------
    mapping : NetworkMapping
    path : path
        PNG file to write.
    statistic : str, optional
        Default: the mapping's assignment statistic.
    """
    statistic = statistic or mapping.statistic
    values = mapping.statistics[statistic]
    significant = (mapping.passes["spatial"] if statistic == mapping.statistic
                   else mapping.p_fdr[statistic] < mapping.alpha)
    n_patterns, n_networks = values.shape
    figure = Figure(figsize=(1.2 + 0.45 * n_networks, 1.2 + 0.22 * n_patterns))
    axes = figure.add_subplot()
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    image = axes.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for row, column in zip(*np.nonzero(significant)):
        axes.text(column, row, "*", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(n_networks), mapping.networks, rotation=60, ha="right", fontsize=7)
    axes.set_yticks(range(n_patterns), [f"{p} -> {a}" for p, a in
                                        zip(mapping.patterns, mapping.assigned)], fontsize=6)
    axes.set_title(f"{statistic} ({mapping.null} null, * FDR < {mapping.alpha})", fontsize=8)
    figure.colorbar(image, ax=axes, shrink=0.6)
    return _save(figure, path)


def _full_surface(values: np.ndarray, atlas: Atlas, fill: float) -> np.ndarray:
    """Values on every vertex of both hemispheres (left then right) of the atlas' mesh."""
    n_mesh = 2 * FSAVERAGE_VERTICES[atlas.space]
    if atlas.surface_vertices is None:
        return np.asarray(values, dtype=np.float64)
    full = np.full(n_mesh, fill, dtype=np.float64)
    full[atlas.surface_vertices] = values
    return full


def _surface_panels(atlas: Atlas, hemisphere_values: Sequence[np.ndarray], title: str,
                    path: str | Path, kind: str, cmap: str) -> Path:
    from nilearn.datasets import load_fsaverage, load_fsaverage_data
    from nilearn.plotting import plot_surf_roi, plot_surf_stat_map

    if atlas.space != "fsaverage5":
        raise ValueError(f"surface views use nilearn's bundled fsaverage5 mesh; the atlas is "
                         f"in {atlas.space!r}")
    mesh = load_fsaverage("fsaverage5")
    sulcal = load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
    figure = Figure(figsize=(8, 6))
    plot = plot_surf_roi if kind == "roi" else plot_surf_stat_map
    for column, (hemi, values) in enumerate(zip(("left", "right"), hemisphere_values)):
        for row, view in enumerate(("lateral", "medial")):
            axes = figure.add_subplot(2, 2, 2 * row + column + 1, projection="3d")
            kwargs = ({"roi_map": values, "threshold": 0.5} if kind == "roi"
                      else {"stat_map": values})
            plot(mesh["inflated"].parts[hemi], hemi=hemi, view=view, axes=axes,
                 figure=figure, cmap=cmap, colorbar=False,
                 bg_map=sulcal.data.parts[hemi], **kwargs)
    figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def plot_atlas(atlas: Atlas, path: str | Path, title: str | None = None) -> Path:
    """Network overlay: nilearn ``plot_roi`` for volumes, four surface views for fsaverage5.

    Parameters
    ----------
    atlas : Atlas
        A label atlas with an ``image`` (volume) or in fsaverage5 space.
    path : path
        PNG file to write.
    """
    title = title or f"{atlas.name} ({atlas.space})"
    labels = atlas.assignment().astype(np.float64)
    if atlas.space.startswith("fsaverage"):
        full = _full_surface(labels, atlas, fill=0.0)
        half = len(full) // 2
        return _surface_panels(atlas, [full[:half], full[half:]], title, path, "roi",
                               "tab20")
    if atlas.image is None:
        raise ValueError(f"atlas {atlas.name!r} in {atlas.space!r} has no image to plot")
    from nilearn.plotting import plot_roi

    figure = Figure(figsize=(9, 3))
    image = atlas.image
    if len(image.shape) == 4:
        import nibabel as nib

        volume = np.zeros(image.shape[:3])
        volume[atlas.grid_mask] = labels
        image = nib.Nifti1Image(volume, image.affine)
    plot_roi(image, figure=figure, title=title, cmap="tab20", colorbar=True)
    return _save(figure, path)


def plot_pattern_map(values: np.ndarray, atlas: Atlas, path: str | Path,
                     title: str = "") -> Path:
    """A pattern's map (n_targets,) on fsaverage5 (four views) or on the volume grid."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (atlas.n_targets,):
        raise ValueError(f"values must be ({atlas.n_targets},) to match the atlas, got "
                         f"{values.shape}")
    if atlas.space.startswith("fsaverage"):
        full = _full_surface(values, atlas, fill=0.0)
        half = len(full) // 2
        return _surface_panels(atlas, [full[:half], full[half:]], title, path, "stat",
                               "RdBu_r")
    if atlas.grid_mask is None or atlas.image is None:
        raise ValueError("volume pattern maps need a volume atlas (grid_mask and image)")
    import nibabel as nib
    from nilearn.plotting import plot_stat_map

    volume = np.zeros(atlas.grid_mask.shape)
    volume[atlas.grid_mask] = values
    figure = Figure(figsize=(9, 3))
    plot_stat_map(nib.Nifti1Image(volume, atlas.image.affine), figure=figure, title=title)
    return _save(figure, path)
