"""Group-level maps with family-wise error control, from per-subject maps.

:func:`group_map` tests per-subject maps (held-out r, a feature band's unique r) against
zero across subjects by sign flipping and returns a :class:`GroupMap` (t, group mean,
FWE-corrected p per target): MNE's cluster / TFCE test on fsaverage meshes, nilearn's
non-parametric inference in volumes, max-t over ROI tables. :func:`save_group_map`
writes it as NIfTI / GIfTI / TSV maps with JSON sidecars.
"""

from brainalign.group.export import save_group_map
from brainalign.group.inference import group_map
from brainalign.group.mesh import surface_adjacency
from brainalign.group.result import GroupMap

__all__ = ["GroupMap", "group_map", "save_group_map", "surface_adjacency"]
