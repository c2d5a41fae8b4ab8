"""simulate_fmri: plant a pattern -> network ground truth in simulated multi-subject BOLD.

From neuron time courses on the TR grid, the simulator picks neuron subgroups (k-means
clusters) whose mean time courses become the planted patterns, lets each network of an
atlas respond to one pattern (or none) through a per-target shifted HRF with jittered
amplitude, and adds background noise at a chosen SNR, for several subjects whose
network boundaries and gains differ. The result, a :class:`Simulation`, is saved as a
folder of ``simulation.json`` (ground truth, parameters, provenance) + ``arrays.npz``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.provenance import provenance_block
from brainalign.simulate.bold import planted_signal
from brainalign.simulate.noise import NOISE_KINDS, make_noise
from brainalign.simulate.space import TargetSpace
from brainalign.simulate.truth import (GroundTruth, assign_networks, choose_subgroups,
                                       subgroup_atoms, subject_responses)
from brainalign.timecourse import zscore_runs

SIMULATION_JSON = "simulation.json"
SIMULATION_ARRAYS = "arrays.npz"
MASK_FILE = "mask.nii.gz"


@dataclass
class Simulation:
    """Simulated fMRI of several subjects with its planted ground truth.

    Attributes
    ----------
    bold : list of ndarray, float32, shape (n_tr, n_targets)
        One BOLD matrix per subject (mean 0 per target and run).
    runs : ndarray of int, shape (n_tr,)
        Scanner run of each TR (shared by all subjects).
    tr_s : float
        Repetition time in seconds.
    space : TargetSpace
        Where the targets are and which atlas network each belongs to.
    truth : GroundTruth
        Planted patterns, subgroups, network -> pattern map and per-target details.
    provenance : dict
    """

    bold: list[np.ndarray]
    runs: np.ndarray
    tr_s: float
    space: TargetSpace
    truth: GroundTruth
    provenance: dict = field(default_factory=dict)

    @property
    def n_subjects(self) -> int:
        return len(self.bold)

    def save(self, path: str | Path) -> Path:
        """Write ``simulation.json`` + ``arrays.npz`` (+ ``mask.nii.gz`` for volumes) in ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        truth = self.truth
        arrays = {f"bold_{subject:03d}": bold for subject, bold in enumerate(self.bold)}
        arrays.update(runs=self.runs, labels=self.space.labels, atoms=truth.atoms,
                      network_pattern=truth.network_pattern, target_labels=truth.target_labels,
                      amplitude=truth.amplitude, delay_s=truth.delay_s)
        if truth.subgroup is not None:
            arrays["subgroup"] = truth.subgroup
        if self.space.coordinates is not None:
            arrays["coordinates"] = self.space.coordinates
        np.savez_compressed(path / SIMULATION_ARRAYS, **arrays)
        if self.space.mask_img is not None:
            self.space.mask_img.to_filename(path / MASK_FILE)
        document = {
            "space": self.space.name, "network_names": self.space.network_names,
            "n_subjects": self.n_subjects, "tr_s": self.tr_s, "snr": truth.snr,
            "pattern_network": truth.pattern_network(), "params": truth.params,
            "provenance": self.provenance,
        }
        (path / SIMULATION_JSON).write_text(json.dumps(document, indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Simulation":
        """Read a folder written by :meth:`save`."""
        path = Path(path)
        if not (path / SIMULATION_JSON).exists():
            raise FileNotFoundError(f"{path} is not a saved simulation (no {SIMULATION_JSON})")
        document = json.loads((path / SIMULATION_JSON).read_text())
        with np.load(path / SIMULATION_ARRAYS) as arrays:
            data = {key: arrays[key] for key in arrays.files}
        mask_img = None
        if (path / MASK_FILE).exists():
            import nibabel as nib

            mask_img = nib.load(path / MASK_FILE)
        space = TargetSpace(document["space"], data["labels"], document["network_names"],
                            data.get("coordinates"), mask_img)
        truth = GroundTruth(atoms=data["atoms"], subgroup=data.get("subgroup"),
                            network_pattern=data["network_pattern"],
                            network_names=document["network_names"],
                            target_labels=data["target_labels"], amplitude=data["amplitude"],
                            delay_s=data["delay_s"], snr=float(document["snr"]),
                            params=document["params"])
        bold = [data[f"bold_{subject:03d}"] for subject in range(document["n_subjects"])]
        return cls(bold, data["runs"], float(document["tr_s"]), space, truth,
                   document["provenance"])


def timecourse_arrays(timecourses: Any, runs: np.ndarray | None, tr_s: float | None
                      ) -> tuple[np.ndarray, np.ndarray, float]:
    """(data, runs, tr_s) from a NeuronTimecourses-like object or a plain array."""
    if not isinstance(timecourses, np.ndarray) and hasattr(timecourses, "data"):
        data = np.asarray(timecourses.data)
        runs = np.asarray(timecourses.runs) if runs is None else runs
        if tr_s is None and getattr(timecourses, "times_s", None) is not None:
            steps = np.diff(np.asarray(timecourses.times_s, dtype=float))
            tr_s = float(np.median(steps[steps > 0])) if np.any(steps > 0) else None
    else:
        data = np.asarray(timecourses)
    if data.ndim != 2:
        raise ValueError(f"neuron time courses must be (n_tr, n_neurons), got shape {data.shape}")
    if runs is None:
        runs = np.zeros(data.shape[0], dtype=np.int64)
    runs = np.asarray(runs)
    if runs.shape != (data.shape[0],):
        raise ValueError(f"runs must have one entry per TR ({data.shape[0]}), got {runs.shape}")
    if tr_s is None:
        raise ValueError("tr_s is required when the time courses carry no times_s")
    return data, runs, float(tr_s)


def split_runs(runs: np.ndarray, n_runs: int | None) -> np.ndarray:
    """Cut a single run into ``n_runs`` contiguous runs of (nearly) equal length."""
    if n_runs is None or len(np.unique(runs)) == n_runs:
        return runs
    if len(np.unique(runs)) != 1:
        raise ValueError(f"time courses already have {len(np.unique(runs))} runs; cannot "
                         f"re-split into n_runs={n_runs}")
    return np.minimum(np.arange(len(runs)) * n_runs // len(runs), n_runs - 1).astype(np.int64)


def simulate_fmri(timecourses: Any = None, space: TargetSpace | None = None, *,
                  atoms: np.ndarray | None = None, subgroup: np.ndarray | None = None,
                  neuron_clusters: np.ndarray | None = None, runs: np.ndarray | None = None,
                  tr_s: float | None = None, n_runs: int | None = None, n_patterns: int = 7,
                  n_clusters: int = 16, n_silent_networks: int = 0, snr: float = 1.0,
                  noise: str = "white", n_subjects: int = 3, amplitude_jitter: float = 0.3,
                  subject_amplitude_jitter: float = 0.2, delay_jitter_s: float = 0.5,
                  boundary_neighbors: int = 6, boundary_steps: int = 2, ar_phi: float = 0.3,
                  fwhm_mm: float = 6.0, random_state: int = 0) -> Simulation:
    """Simulate multi-subject BOLD in which atlas networks respond to neuron subgroup patterns.

    Parameters
    ----------
    timecourses : NeuronTimecourses or ndarray, shape (n_tr, n_neurons)
        Neuron time courses on the TR grid (``data``, ``runs``, ``times_s`` are used).
        Subgroups are k-means clusters of neurons; their mean time courses are the
        planted patterns. Leave None when ``atoms`` are given.
    space : TargetSpace
        Target space and network labels (see :mod:`brainalign.simulate.space`).
    atoms : ndarray, shape (n_tr, n_patterns), optional
        Patterns to plant directly (no neuron subgroups).
    subgroup : ndarray of int, shape (n_neurons,), optional
        Planted subgroup of every neuron (-1 = none), e.g. ``other.truth.subgroup`` to
        plant the same patterns again at another SNR; default: chosen among clusters.
    neuron_clusters : ndarray of int, shape (n_neurons,), optional
        Clusters to choose the planted subgroups from (e.g. ``Patterns.subgroup`` of the
        study's own pattern step); default: k-means with ``n_clusters`` clusters.
    runs : ndarray of int, shape (n_tr,), optional
        Run of each TR (default from ``timecourses``, else one run).
    tr_s : float, optional
        Repetition time in seconds (default from ``timecourses.times_s``).
    n_runs : int, optional
        Cut a single-run story into this many contiguous scanner runs.
    n_patterns : int
        Number of planted patterns (ignored when ``atoms`` are given).
    n_clusters : int
        Number of k-means neuron clusters the planted subgroups are drawn from.
    n_silent_networks : int
        Networks that respond to no pattern.
    snr : float
        Signal-to-noise variance ratio of a responsive target of unit amplitude;
        0 gives a null simulation (noise only).
    noise : {"white", "ar1", "rest", "smooth_ar"}
        Background: ``rest`` is brainspace's real resting state (fsaverage meshes),
        ``smooth_ar`` spatially smooth AR(1) (volume spaces only).
    n_subjects : int
    amplitude_jitter : float
        Coefficient of variation of per-target response amplitudes (gamma, mean 1).
    subject_amplitude_jitter : float
        Coefficient of variation of per-subject, per-network gains.
    delay_jitter_s : float
        Standard deviation of per-target HRF delays, in seconds.
    boundary_neighbors, boundary_steps : int
        Per-subject boundary jitter (see :func:`~brainalign.simulate.truth.jitter_labels`).
    ar_phi : float
        AR(1) coefficient of ``ar1`` / ``smooth_ar`` noise.
    fwhm_mm : float
        Spatial smoothness of ``smooth_ar`` noise.
    random_state : int
        Seed; equal seeds and inputs give identical simulations.

    Returns
    -------
    Simulation
    """
    if space is None:
        raise ValueError("space is required (fsaverage_space, volume_space, roi_space or "
                         "space_from_atlas)")
    if noise not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {noise!r}; expected one of {NOISE_KINDS}")
    if snr < 0:
        raise ValueError(f"snr must be >= 0, got {snr}")
    # separate streams: reusing a subgroup leaves the networks, responses and noise as they were
    subgroup_rng, truth_rng, noise_rng = np.random.default_rng(random_state).spawn(3)
    if atoms is None:
        if timecourses is None:
            raise ValueError("give neuron time courses (timecourses=...) or atoms=...")
        data, runs, tr_s = timecourse_arrays(timecourses, runs, tr_s)
        runs = split_runs(runs, n_runs)
        if subgroup is None:
            subgroup = choose_subgroups(data, runs, n_clusters, n_patterns, subgroup_rng,
                                        clusters=neuron_clusters)
        elif np.shape(subgroup) != (data.shape[1],):
            raise ValueError(f"subgroup must give one pattern index per neuron "
                             f"({data.shape[1]}), got shape {np.shape(subgroup)}")
        subgroup = np.asarray(subgroup, dtype=np.int64)
        planted = subgroup_atoms(data, runs, subgroup)
    else:
        atoms = np.asarray(atoms, dtype=np.float64)
        if atoms.ndim != 2:
            raise ValueError(f"atoms must be (n_tr, n_patterns), got shape {atoms.shape}")
        if tr_s is None:
            raise ValueError("tr_s is required with atoms=...")
        runs = split_runs(np.zeros(len(atoms), np.int64) if runs is None else np.asarray(runs),
                          n_runs)
        subgroup = None
        planted = zscore_runs(atoms, runs)
    n_tr = planted.shape[0]

    network_pattern = assign_networks(space.n_networks, planted.shape[1], n_silent_networks,
                                      truth_rng)
    target_labels, amplitude, delay_s = subject_responses(
        space, network_pattern, n_subjects, amplitude_jitter, subject_amplitude_jitter,
        delay_jitter_s, boundary_neighbors, boundary_steps, truth_rng)
    params = dict(n_patterns=int(planted.shape[1]), n_clusters=n_clusters,
                  n_silent_networks=n_silent_networks, noise=noise, n_subjects=n_subjects,
                  n_runs=int(len(np.unique(runs))), amplitude_jitter=amplitude_jitter,
                  subject_amplitude_jitter=subject_amplitude_jitter,
                  delay_jitter_s=delay_jitter_s, boundary_neighbors=boundary_neighbors,
                  boundary_steps=boundary_steps, ar_phi=ar_phi, fwhm_mm=fwhm_mm,
                  random_state=random_state, atoms_given=subgroup is None)
    truth = GroundTruth(planted, subgroup, network_pattern, list(space.network_names),
                        target_labels, amplitude, delay_s, float(snr), params)

    target_pattern = truth.target_pattern()
    bold = []
    for subject in range(n_subjects):
        signal = planted_signal(planted, runs, tr_s, target_pattern[subject], delay_s[subject])
        signal *= (np.sqrt(snr) * amplitude[subject]).astype(np.float32)
        background = make_noise(noise, space, n_tr, runs, noise_rng, ar_phi=ar_phi,
                                fwhm_mm=fwhm_mm)
        subject_bold = signal + background
        for run in np.unique(runs):
            subject_bold[runs == run] -= subject_bold[runs == run].mean(axis=0)
        bold.append(subject_bold.astype(np.float32))
    provenance = provenance_block(stage="simulate", space=space.name, snr=float(snr),
                                  tr_s=tr_s, n_tr=n_tr, params=params)
    return Simulation(bold, runs, tr_s, space, truth, provenance)
