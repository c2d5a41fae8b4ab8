"""Ground-truth fMRI simulation and recovery scoring.

``simulate_fmri`` plants a known neuron-subgroup pattern -> brain-network map in
simulated multi-subject BOLD (fsaverage5 surface, MNI volume or ROI table);
``score_recovery`` runs the study (patterns -> encoding -> network mapping) on it and
scores how much of the planted truth comes back.
"""

from brainalign.simulate.bids import SyntheticBids, make_fmriprep_dataset
from brainalign.simulate.noise import NOISE_KINDS, make_noise
from brainalign.simulate.recovery import RecoveryScores, score_mapping, score_recovery
from brainalign.simulate.simulation import Simulation, simulate_fmri
from brainalign.simulate.space import (TargetSpace, fsaverage_space, roi_space,
                                       space_from_atlas, volume_space)
from brainalign.simulate.truth import GroundTruth

__all__ = [
    "GroundTruth", "NOISE_KINDS", "RecoveryScores", "Simulation", "SyntheticBids",
    "TargetSpace", "fsaverage_space", "make_fmriprep_dataset", "make_noise", "roi_space",
    "score_mapping", "score_recovery", "simulate_fmri", "space_from_atlas", "volume_space",
]
