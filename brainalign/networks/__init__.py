"""Functional brain network atlases and the mapping of model patterns onto them.

- :mod:`.atlases`: :class:`Atlas` and :func:`load_atlas` (Yeo 7/17, Seitzman, Dosenbach,
  Cole-Anticevic, user files), resampled to the data's space with nilearn.
- :mod:`.nulls`: spatial nulls (spin test, phase-randomised volume surrogates, permutation).
- :mod:`.mapping`: :func:`map_patterns` -> :class:`NetworkMapping` (correlation, Dice,
  Jaccard, enrichment, null p-values with a Pareto tail, FDR per pattern, pass masks,
  assignment) and subgroup inheritance.
- :mod:`.spatial`: :func:`spatial_shift_test`, each pattern's map against the maps of its
  time-reversed, shifted copies (the spatial null that holds on network-shaped backgrounds).
- :mod:`.temporal`: :func:`temporal_network_test`, each pattern's unique held-out r on
  the network signals against circular shifts (required by the assignment when given).
- :mod:`.metrics`: study A organisation metrics (diversity, consistency, compactness).
- :mod:`.outputs`: tables with sidecars and assignment maps (via ``export.save_map``).
- :mod:`.figures`: PNG figures with nilearn / matplotlib (imported on demand).
"""

from brainalign.networks.atlases import ATLAS_NAMES, Atlas, load_atlas, render_spheres
from brainalign.networks.mapping import (NetworkMapping, layer_network_composition,
                                         map_patterns, subgroup_networks)
from brainalign.networks.metrics import (OrganisationMetrics, assignment_consistency,
                                         compactness, organisation_metrics,
                                         spectral_diversity, subgroup_diversity)
from brainalign.networks.nulls import (fsaverage_sphere, permutation_indices,
                                       phase_randomized_surrogates, spin_indices)
from brainalign.networks.outputs import (assignment_maps, save_assignment_maps,
                                         write_mapping_tables)
from brainalign.networks.spatial import SpatialShiftTest, spatial_shift_test
from brainalign.networks.temporal import TemporalTest, network_signals, temporal_network_test

__all__ = ["ATLAS_NAMES", "Atlas", "NetworkMapping", "OrganisationMetrics", "SpatialShiftTest",
           "TemporalTest",
           "assignment_consistency", "assignment_maps", "compactness", "fsaverage_sphere",
           "layer_network_composition", "load_atlas", "map_patterns", "organisation_metrics",
           "permutation_indices", "phase_randomized_surrogates", "render_spheres",
           "save_assignment_maps", "spatial_shift_test", "spectral_diversity", "spin_indices", "subgroup_diversity",
           "subgroup_networks", "temporal_network_test", "network_signals",
           "write_mapping_tables"]
