"""The brain loop: lesion the neurons mapped to brain network N and see where encoding fails.

For every neuron subgroup that the mapping step assigned to a network, the subgroup's
neurons are lesioned (:func:`brainalign.interventions.neurons.lesion`), the story is
re-recorded from the lesioned model (:func:`brainalign.record.record_story`), the
recording is put on the TR grid again with the same settings
(:func:`brainalign.timecourse.recording_to_tr`), the same features are formed (by default
the mean time course of every subgroup, the patterns of study A) and the same encoding
model is refitted with the same cross-validation (:func:`brainalign.encoding.fit_encoding`).
The result is the change in held-out ``r``, averaged over the targets of each network, for
every lesion. If the mapping is right, the drop is largest in the lesioned subgroup's own
network: on simulations with a planted subgroup -> network truth this is checkable.

Composes other stages only; nothing here is computed by hand except the per-network means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from brainalign.interventions.neurons import NeuronSet, lesion

FeatureFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]


def subgroup_features(data: np.ndarray, subgroup: np.ndarray) -> np.ndarray:
    """Mean time course of each subgroup.

    Parameters
    ----------
    data : ndarray, shape (n_tr, n_neurons)
    subgroup : ndarray of int, shape (n_neurons,)
        Subgroup of each neuron, 0..n_subgroups-1 (-1 = none, left out).

    Returns
    -------
    ndarray, shape (n_tr, n_subgroups)
    """
    subgroup = np.asarray(subgroup)
    if data.shape[1] != subgroup.size:
        raise ValueError(f"data has {data.shape[1]} neurons but subgroup has {subgroup.size} entries")
    n_subgroups = int(subgroup.max()) + 1
    out = np.zeros((data.shape[0], n_subgroups), dtype=np.float64)
    for g in range(n_subgroups):
        members = subgroup == g
        if members.any():
            out[:, g] = np.asarray(data[:, members], dtype=np.float64).mean(1)
    return out


def network_means(values: np.ndarray, target_labels: np.ndarray, n_networks: int) -> np.ndarray:
    """Mean of ``values`` (n_targets,) over the targets of each network label 1..n_networks
    (NaN where a network has no target; NaN values are ignored)."""
    out = np.full(n_networks, np.nan)
    for k in range(1, n_networks + 1):
        inside = (target_labels == k) & np.isfinite(values)
        if inside.any():
            out[k - 1] = float(values[inside].mean())
    return out


@dataclass
class LoopResult:
    """Change in held-out encoding accuracy per network after each subgroup lesion.

    Attributes
    ----------
    network_names : list of str
        Evaluated networks (columns).
    lesioned_networks : list of str
        Network assigned to each lesioned subgroup (rows).
    lesioned_subgroups : list of int
    baseline_r : ndarray, shape (n_networks,)
        Mean held-out r per network, unlesioned model.
    lesioned_r : ndarray, shape (n_lesions, n_networks)
    subgroup_sizes : list of int
        Neurons lesioned in each row.
    provenance : dict
    """

    network_names: list[str]
    lesioned_networks: list[str]
    lesioned_subgroups: list[int]
    baseline_r: np.ndarray
    lesioned_r: np.ndarray
    subgroup_sizes: list[int]
    provenance: dict = field(default_factory=dict)

    @property
    def delta_r(self) -> np.ndarray:
        """``lesioned_r - baseline_r``, shape (n_lesions, n_networks) (negative = drop)."""
        return self.lesioned_r - self.baseline_r[None]

    def largest_drop_network(self) -> list[str]:
        """For each lesion, the network whose mean r dropped most."""
        return [self.network_names[int(np.nanargmin(row))] for row in self.delta_r]

    def own_network_hit(self) -> list[bool]:
        """For each lesion, whether the largest drop is in the subgroup's own network."""
        return [hit == own for hit, own in zip(self.largest_drop_network(), self.lesioned_networks)]

    def to_dict(self) -> dict:
        return {
            "network_names": self.network_names, "lesioned_networks": self.lesioned_networks,
            "lesioned_subgroups": self.lesioned_subgroups, "baseline_r": self.baseline_r.tolist(),
            "lesioned_r": self.lesioned_r.tolist(), "delta_r": self.delta_r.tolist(),
            "largest_drop_network": self.largest_drop_network(), "own_network_hit": self.own_network_hit(),
            "subgroup_sizes": self.subgroup_sizes, "provenance": self.provenance,
        }


def brain_loop(
    loaded,
    story,
    brain: np.ndarray,
    target_labels: np.ndarray,
    network_names: Sequence[str],
    subgroup: np.ndarray,
    subgroup_network: Mapping[int, str],
    work_dir: str | Path,
    *,
    sites: Sequence[str] = ("mlp.out",),
    layers: Sequence[int] | None = None,
    record_options: Mapping | None = None,
    tr_options: Mapping | None = None,
    encoding_options: Mapping | None = None,
    features: FeatureFunction = subgroup_features,
    lesion_sets: Mapping[int, NeuronSet] | None = None,
) -> LoopResult:
    """Lesion each mapped subgroup, re-record, re-encode, and compare r per network.

    Parameters
    ----------
    loaded : LoadedModel
    story : Story
        With scan timing (``tr_s``, ``n_volumes``) matching ``brain``.
    brain : ndarray, shape (n_tr, n_targets)
        BOLD on the TR grid that :func:`~brainalign.timecourse.recording_to_tr` produces
        with ``tr_options`` (same rows, same trimming).
    target_labels : ndarray of int, shape (n_targets,)
        Network label of each target (1..n_networks, 0 = none).
    network_names : sequence of str
        Name of label k at position k - 1.
    subgroup : ndarray of int, shape (n_neurons,)
        Subgroup of each recorded neuron (order of the recording's NeuronTable).
    subgroup_network : mapping of int to str
        The network the mapping step assigned to each subgroup (``"none"`` = skip).
    work_dir : path
        Recordings go to ``work_dir/baseline`` and ``work_dir/lesion-<subgroup>``.
    record_options, tr_options, encoding_options : mapping, optional
        Passed to ``record_story``, ``recording_to_tr`` and ``fit_encoding`` for every
        condition (``n_perm`` defaults to 0: only r is needed; ``tr_s`` to the story's).
    features : callable
        ``features(data (n_tr, n_neurons), subgroup) -> X (n_tr, n_features)``.
    lesion_sets : mapping of int to NeuronSet, optional
        The neurons lesioned for each subgroup; default its own members. A control passes
        matched random sets here (e.g. :func:`~brainalign.interventions.layer_matched`,
        which leaves the subgroup's own neurons out) while the features stay the real
        subgroups'; a subgroup without a set is not lesioned.
    """
    from brainalign.encoding import fit_encoding
    from brainalign.provenance import provenance_block
    from brainalign.record import Recording, record_story
    from brainalign.timecourse import recording_to_tr

    work_dir = Path(work_dir)
    record_options = dict(record_options or {})
    record_options.setdefault("progress", False)
    # each lesion folder holds the recording of one lesion: re-recorded when it changes
    record_options.setdefault("overwrite", True)
    tr_options = dict(tr_options or {})
    # the story's TR: the encoding model's cleaning includes its high-pass filter
    encoding_options = {"n_perm": 0, "tr_s": story.tr_s, **(encoding_options or {})}
    target_labels = np.asarray(target_labels)
    if brain.shape[1] != target_labels.size:
        raise ValueError(f"brain has {brain.shape[1]} targets but target_labels has {target_labels.size}")
    n_networks = len(network_names)

    def encode(folder: Path) -> tuple[np.ndarray, object]:
        path = record_story(loaded, story, list(sites), folder, layers=layers, **record_options)
        recording = Recording.open(path)
        timecourses = recording_to_tr(recording, **tr_options)
        if timecourses.data.shape[0] != brain.shape[0]:
            raise ValueError(f"time courses have {timecourses.data.shape[0]} TRs, brain has {brain.shape[0]}; "
                             "give tr_options that produce the brain's grid")
        if len(timecourses.neurons) != len(subgroup):
            raise ValueError(f"recording has {len(timecourses.neurons)} neurons, subgroup {len(subgroup)}")
        X = features(np.asarray(timecourses.data), subgroup)
        result = fit_encoding(X, brain, timecourses.runs, **encoding_options)
        return network_means(np.asarray(result.r), target_labels, n_networks), timecourses.neurons

    baseline, neurons = encode(work_dir / "baseline")
    rows, lesioned_networks, lesioned_groups, sizes, lesioned_names = [], [], [], [], []
    for group, network in sorted(subgroup_network.items()):
        if network == "none":
            continue
        if network not in network_names:
            raise ValueError(f"subgroup {group} is assigned to {network!r}, not one of {list(network_names)}")
        if lesion_sets is None:
            neuron_set = NeuronSet.from_table(neurons, np.asarray(subgroup) == group,
                                              name=f"subgroup{group}")
        else:
            neuron_set = lesion_sets.get(group, NeuronSet({}))
        if neuron_set.size == 0:
            continue
        with lesion(loaded.model, neuron_set):
            r, _ = encode(work_dir / f"lesion-{group}")
        rows.append(r)
        lesioned_networks.append(network)
        lesioned_groups.append(int(group))
        sizes.append(neuron_set.size)
        lesioned_names.append(neuron_set.name)
    return LoopResult(
        network_names=list(network_names), lesioned_networks=lesioned_networks,
        lesioned_subgroups=lesioned_groups, baseline_r=baseline,
        lesioned_r=np.array(rows).reshape(len(rows), n_networks), subgroup_sizes=sizes,
        provenance=provenance_block(stage="interventions.loop", sites=list(sites), layers=layers,
                                    lesioned_sets=[f"{g}: {name}" for g, name in zip(
                                        lesioned_groups, lesioned_names)],
                                    story=story.name, record_options={k: str(v) for k, v in record_options.items()},
                                    tr_options={k: str(v) for k, v in tr_options.items()},
                                    encoding_options={k: str(v) for k, v in encoding_options.items()}),
    )
