"""Functional brain network atlases and the mapping of model patterns onto them.

- :mod:`.atlases`: :class:`Atlas` and :func:`load_atlas` (Yeo 7/17, Seitzman, Dosenbach,
  Cole-Anticevic, user files), resampled to the data's space with nilearn.
"""

from brainalign.networks.atlases import ATLAS_NAMES, Atlas, load_atlas, render_spheres

__all__ = ["ATLAS_NAMES", "Atlas", "load_atlas", "render_spheres"]
