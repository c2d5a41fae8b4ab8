"""fMRI inputs: maskers for NIfTI volumes, GIfTI surfaces and ROI tables (fit / transform /
inverse_transform), and BrainData, the cleaned targets checked against the stimulus."""

from brainalign.brain.base import BrainMasker
from brainalign.brain.data import BrainData, find_invalid_targets, load_brain
from brainalign.brain.roi_table import RoiTableMasker
from brainalign.brain.surface import SurfaceMasker, read_gifti_series
from brainalign.brain.tables import read_table
from brainalign.brain.volume import VolumeMasker

__all__ = ["BrainData", "BrainMasker", "RoiTableMasker", "SurfaceMasker", "VolumeMasker",
           "find_invalid_targets", "load_brain", "read_gifti_series", "read_table"]
