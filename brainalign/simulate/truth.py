"""The planted ground truth: neuron subgroups, their patterns, and which network answers which.

A simulation plants a known answer to the question a brainalign study asks: these
neurons (a subgroup) share this time course (an atom, the subgroup's mean), and this
brain network responds to it. :class:`GroundTruth` stores that answer with every
per-subject, per-target detail (jittered network boundaries, response amplitudes and
hemodynamic delays) so that recovery can be scored. Subgroups are chosen with
scikit-learn's k-means on the neurons' z-scored time courses, so that each planted
pattern is a real mode of the model's activity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from brainalign.simulate.space import TargetSpace
from brainalign.timecourse import zscore_runs


@dataclass
class GroundTruth:
    """What was planted in a :class:`~brainalign.simulate.Simulation`.

    Attributes
    ----------
    atoms : ndarray, shape (n_tr, n_patterns)
        Planted patterns on the TR grid, z-scored within each run.
    subgroup : ndarray of int, shape (n_neurons,) or None
        Pattern each neuron belongs to (-1 = none); None when atoms were given directly.
    network_pattern : ndarray of int, shape (n_networks,)
        Pattern each network responds to (-1 = none).
    network_names : list of str
        Network names, aligned with ``network_pattern`` (label k = ``network_names[k-1]``).
    target_labels : ndarray of int, shape (n_subjects, n_targets)
        Network label of every target in every subject (boundaries jittered per subject).
    amplitude : ndarray, shape (n_subjects, n_targets)
        Response amplitude relative to the noise (0 = target does not respond), in units of
        ``sqrt(snr)``: a target's signal standard deviation is ``amplitude * sqrt(snr)``
        times its noise standard deviation.
    delay_s : ndarray, shape (n_subjects, n_targets)
        Shift of each target's hemodynamic response from the canonical one, in seconds.
    snr : float
        Signal-to-noise variance ratio of a responsive target of unit amplitude.
    params : dict
        Simulation parameters and seed (JSON-serialisable).
    """

    atoms: np.ndarray
    subgroup: np.ndarray | None
    network_pattern: np.ndarray
    network_names: list[str]
    target_labels: np.ndarray
    amplitude: np.ndarray
    delay_s: np.ndarray
    snr: float
    params: dict = field(default_factory=dict)

    @property
    def n_patterns(self) -> int:
        return self.atoms.shape[1]

    @property
    def responsive(self) -> np.ndarray:
        """Boolean (n_subjects, n_targets): targets carrying planted signal."""
        return self.amplitude > 0

    def target_pattern(self) -> np.ndarray:
        """Pattern driving each target, shape (n_subjects, n_targets), -1 = none."""
        lookup = np.concatenate([[-1], self.network_pattern])
        pattern = lookup[self.target_labels]
        return np.where(self.responsive, pattern, -1)

    def pattern_network(self) -> list[str]:
        """Planted network name of each pattern (``"none"`` when no network answers it)."""
        names = ["none"] * self.n_patterns
        for network, pattern in enumerate(self.network_pattern):
            if pattern >= 0:
                names[pattern] = self.network_names[network]
        return names


def choose_subgroups(data: np.ndarray, runs: np.ndarray, n_clusters: int, n_patterns: int,
                     rng: np.random.Generator, clusters: np.ndarray | None = None) -> np.ndarray:
    """Neuron subgroups: distinct clusters of z-scored time courses.

    Neurons are clustered with k-means (or ``clusters`` are taken as given, e.g. the
    subgroups of a fitted ``Patterns``); the first planted cluster is drawn at random and
    each next one is the cluster whose mean time course has the smallest largest
    absolute correlation with those already chosen, so that the planted patterns are as
    distinguishable as the model's activity allows (language-model neuron clusters
    share a strong common mode).

    Parameters
    ----------
    data : ndarray, shape (n_tr, n_neurons)
        Neuron time courses on the TR grid.
    runs : ndarray of int, shape (n_tr,)
        Run of each TR (z-scoring is done within runs).
    n_clusters : int
        Number of k-means clusters over neurons.
    n_patterns : int
        Number of clusters kept as planted subgroups.
    rng : numpy Generator
    clusters : ndarray of int, shape (n_neurons,), optional
        Cluster of every neuron (-1 = none); replaces k-means (``n_clusters`` is then
        the number of distinct non-negative labels).

    Returns
    -------
    subgroup : ndarray of int, shape (n_neurons,)
        Pattern index 0..n_patterns-1 of each neuron, -1 for neurons left out.
    """
    from sklearn.cluster import KMeans

    profiles = zscore_runs(np.asarray(data, dtype=np.float64), runs)
    if clusters is not None:
        clusters = np.asarray(clusters, dtype=np.int64)
        if clusters.shape != (data.shape[1],):
            raise ValueError(f"clusters must give one label per neuron ({data.shape[1]}), got "
                             f"shape {clusters.shape}")
        _, cluster = np.unique(clusters, return_inverse=True)
        cluster = np.where(clusters >= 0, cluster - int(np.any(clusters < 0)), -1)
        n_clusters = int(cluster.max()) + 1
    if not 1 <= n_patterns <= n_clusters <= data.shape[1]:
        raise ValueError(
            f"need 1 <= n_patterns <= n_clusters <= n_neurons, got n_patterns={n_patterns}, "
            f"n_clusters={n_clusters}, n_neurons={data.shape[1]}"
        )
    if clusters is None:
        keep = profiles.std(axis=0) > 0
        kmeans = KMeans(n_clusters=n_clusters, n_init=4,
                        random_state=int(rng.integers(2**31 - 1))).fit(profiles[:, keep].T)
        cluster = np.full(data.shape[1], -1, dtype=np.int64)
        cluster[keep] = kmeans.labels_
    means = np.stack([profiles[:, cluster == c].mean(axis=1) for c in range(n_clusters)], axis=1)
    similarity = np.abs(np.corrcoef(means.T))
    chosen = [int(rng.integers(n_clusters))]
    while len(chosen) < n_patterns:
        worst = similarity[:, chosen].max(axis=1)
        worst[chosen] = np.inf
        chosen.append(int(np.argmin(worst)))
    subgroup = np.full(data.shape[1], -1, dtype=np.int64)
    for pattern, cluster_id in enumerate(chosen):
        subgroup[cluster == cluster_id] = pattern
    return subgroup


def subgroup_atoms(data: np.ndarray, runs: np.ndarray, subgroup: np.ndarray) -> np.ndarray:
    """Mean z-scored time course of each subgroup, re-z-scored within runs.

    Returns
    -------
    atoms : ndarray, shape (n_tr, n_patterns)
    """
    profiles = zscore_runs(np.asarray(data, dtype=np.float64), runs)
    n_patterns = int(subgroup.max()) + 1
    means = np.stack([profiles[:, subgroup == pattern].mean(axis=1)
                      for pattern in range(n_patterns)], axis=1)
    return zscore_runs(means, runs)


def jitter_labels(labels: np.ndarray, coordinates: np.ndarray | None, n_neighbors: int,
                  n_steps: int, rng: np.random.Generator) -> np.ndarray:
    """One subject's network labels: boundaries moved by random neighbour copying.

    At each step every target takes the label of one of its ``n_neighbors`` nearest
    targets (itself included), drawn at random; labels only change where networks meet,
    so a network's interior is kept and its border wanders by a few targets.

    Parameters
    ----------
    labels : ndarray of int, shape (n_targets,)
    coordinates : ndarray, shape (n_targets, 3) or None
        Without coordinates (ROI tables) the labels are returned unchanged.
    n_neighbors, n_steps : int
        Neighbourhood size and number of copying steps (0 = no jitter).
    rng : numpy Generator
    """
    if coordinates is None or n_steps == 0 or n_neighbors <= 1:
        return labels.copy()
    from scipy.spatial import cKDTree

    _, neighbors = cKDTree(coordinates).query(coordinates, k=n_neighbors)
    jittered = labels.copy()
    for _ in range(n_steps):
        pick = rng.integers(n_neighbors, size=len(labels))
        jittered = jittered[neighbors[np.arange(len(labels)), pick]]
    # the unlabelled (e.g. medial wall) set stays the atlas's own
    return np.where(labels == 0, 0, np.where(jittered == 0, labels, jittered))


def assign_networks(n_networks: int, n_patterns: int, n_silent_networks: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Pattern of each network: distinct patterns for all but ``n_silent_networks`` networks.

    Returns
    -------
    network_pattern : ndarray of int, shape (n_networks,), -1 = silent network
    """
    n_driven = n_networks - n_silent_networks
    if not 0 <= n_driven <= n_patterns:
        raise ValueError(
            f"{n_networks} networks with {n_silent_networks} silent need {n_driven} distinct "
            f"patterns, but only {n_patterns} patterns are planted"
        )
    network_pattern = np.full(n_networks, -1, dtype=np.int64)
    driven = rng.choice(n_networks, size=n_driven, replace=False)
    network_pattern[driven] = rng.choice(n_patterns, size=n_driven, replace=False)
    return network_pattern


def subject_responses(space: TargetSpace, network_pattern: np.ndarray, n_subjects: int,
                      amplitude_jitter: float, subject_amplitude_jitter: float,
                      delay_jitter_s: float, boundary_neighbors: int, boundary_steps: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-subject labels, amplitudes and delays of every target.

    Amplitudes are gamma-distributed with mean 1 and coefficient of variation
    ``amplitude_jitter`` per target, times a per-subject, per-network factor drawn the
    same way with ``subject_amplitude_jitter``; targets of silent networks (or label 0)
    get amplitude 0. Delays are normal with standard deviation ``delay_jitter_s``.

    Returns
    -------
    target_labels, amplitude, delay_s : ndarrays, shape (n_subjects, n_targets)
    """
    def gamma_unit_mean(cv: float, size) -> np.ndarray:
        if cv <= 0:
            return np.ones(size)
        shape = 1.0 / cv**2
        return rng.gamma(shape, 1.0 / shape, size=size)

    n_targets = space.n_targets
    labels = np.empty((n_subjects, n_targets), dtype=np.int64)
    amplitude = np.zeros((n_subjects, n_targets))
    delay_s = np.zeros((n_subjects, n_targets))
    driven = np.concatenate([[False], network_pattern >= 0])
    for subject in range(n_subjects):
        labels[subject] = jitter_labels(space.labels, space.coordinates, boundary_neighbors,
                                        boundary_steps, rng)
        network_gain = np.concatenate([[0.0], gamma_unit_mean(subject_amplitude_jitter,
                                                               space.n_networks)])
        gain = gamma_unit_mean(amplitude_jitter, n_targets) * network_gain[labels[subject]]
        amplitude[subject] = np.where(driven[labels[subject]], gain, 0.0)
        delay_s[subject] = rng.normal(0.0, delay_jitter_s, size=n_targets) if delay_jitter_s > 0 \
            else 0.0
    return labels, amplitude, delay_s
