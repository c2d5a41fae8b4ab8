"""Functional brain network atlases and the mapping of model patterns onto them.

- :mod:`.atlases`: :class:`Atlas` and :func:`load_atlas` (Yeo 7/17, Seitzman, Dosenbach,
  Cole-Anticevic, user files), resampled to the data's space with nilearn.
- :mod:`.nulls`: spatial nulls (spin test, phase-randomised volume surrogates, permutation).
- :mod:`.mapping`: :func:`map_patterns` -> :class:`NetworkMapping` (correlation, Dice,
  Jaccard, enrichment, null p-values, FDR, assignment) and subgroup inheritance.
"""

from brainalign.networks.atlases import ATLAS_NAMES, Atlas, load_atlas, render_spheres
from brainalign.networks.mapping import (NetworkMapping, layer_network_composition,
                                         map_patterns, subgroup_networks)
from brainalign.networks.nulls import (fsaverage_sphere, permutation_indices,
                                       phase_randomized_surrogates, spin_indices)

__all__ = ["ATLAS_NAMES", "Atlas", "NetworkMapping", "fsaverage_sphere",
           "layer_network_composition", "load_atlas", "map_patterns", "permutation_indices",
           "phase_randomized_surrogates", "render_spheres", "spin_indices",
           "subgroup_networks"]
