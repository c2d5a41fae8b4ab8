"""Which surface targets are neighbours: adjacency from the fsaverage meshes nilearn bundles.

Cluster and TFCE inference on a surface need the mesh. fsaverage5's triangles are those of
nilearn's bundled sphere (:func:`nilearn.datasets.load_fsaverage`). fsaverage3 and
fsaverage4 are not bundled, but the fsaverage family is one icosahedron subdivided again
and again, every level keeping the vertices of the level below first; on the sphere, the
triangles of a coarser level are therefore the convex hull (:class:`scipy.spatial.ConvexHull`)
of fsaverage5's first 642 (fsaverage3) or 2,562 (fsaverage4) vertices. Their edges are the
parent pairs of the next level's midpoint vertices (checked in the tests). Finer meshes
(fsaverage6, fsaverage) are not bundled: pass an adjacency matrix instead.

:func:`surface_adjacency` joins the hemispheres' adjacency (:func:`mne.spatial_tris_adjacency`)
block-diagonally, with no edge across hemispheres, over the masker's kept vertices only.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import sparse

#: Vertices per hemisphere of the meshes this module can build.
MESH_VERTICES = {"fsaverage3": 642, "fsaverage4": 2562, "fsaverage5": 10242}

_NILEARN_HEMI = {"L": "left", "R": "right"}


@lru_cache(maxsize=None)
def fsaverage_faces(space: str, hemi: str) -> np.ndarray:
    """Triangles of one hemisphere of an fsaverage mesh.

    Parameters
    ----------
    space : {"fsaverage3", "fsaverage4", "fsaverage5"}
    hemi : {"L", "R"}

    Returns
    -------
    ndarray of int, shape (n_faces, 3)
        Vertex indices (0 ... n_vertices - 1) of each triangle. Orientation is not
        consistent for fsaverage3/4 (only the edges matter for adjacency).
    """
    from nilearn import datasets

    if space not in MESH_VERTICES:
        raise ValueError(f"no bundled mesh for space {space!r}; available: "
                         f"{list(MESH_VERTICES)} (pass adjacency= for other surfaces)")
    sphere = datasets.load_fsaverage("fsaverage5")["sphere"].parts[_NILEARN_HEMI[hemi]]
    if space == "fsaverage5":
        faces = np.asarray(sphere.faces)
    else:
        from scipy.spatial import ConvexHull

        faces = ConvexHull(np.asarray(sphere.coordinates)[:MESH_VERTICES[space]]).simplices
    faces = faces.astype(np.int64)
    faces.flags.writeable = False
    return faces


def surface_adjacency(masker) -> sparse.csr_matrix:
    """Vertex adjacency over a fitted SurfaceMasker's targets (kept vertices, left then right).

    Parameters
    ----------
    masker : fitted brainalign.brain.SurfaceMasker
        Its ``space_`` names the mesh (fsaverage3, fsaverage4 or fsaverage5).

    Returns
    -------
    scipy.sparse.csr_matrix of bool, shape (n_targets, n_targets)
        True where two kept vertices share a mesh edge (and on the diagonal).
    """
    import mne

    if masker.space_ not in MESH_VERTICES:
        raise ValueError(f"no bundled mesh for surface space {masker.space_!r}; available: "
                         f"{list(MESH_VERTICES)}; pass adjacency= (n_targets x n_targets)")
    blocks = []
    for hemi in masker.hemispheres_:
        n_vertices = masker.n_vertices_[hemi]
        if n_vertices != MESH_VERTICES[masker.space_]:
            raise ValueError(f"hemisphere {hemi} has {n_vertices} vertices; {masker.space_} has "
                             f"{MESH_VERTICES[masker.space_]}")
        full = mne.spatial_tris_adjacency(fsaverage_faces(masker.space_, hemi),
                                          remap_vertices=False, verbose=False).tocsr()
        keep = masker.mask_[hemi]
        blocks.append(full[keep][:, keep])
    return sparse.block_diag(blocks, format="csr").astype(bool)
