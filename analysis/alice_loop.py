"""The brain loop on the Brennan 2016 Alice ROIs: lesion the atom subgroup mapped to an ROI, re-encode.

Usage::

    python analysis/alice_loop.py [--data PATH] [--out PATH] [--n-atoms K] [--no-control]

Steps (brainalign's public API; the filtering and CV of ``analysis/alice_encoding.py``,
whose functions are imported rather than repeated):

1. Targets: the group average of the 27 subjects' 6 ROI time courses (LATL RATL LPTL LIPL
   LPreM LIFG), each subject detrended, high-pass filtered at 1/128 Hz and z-scored
   (``alice_encoding.high_pass``). The story carries the data's scan from the loader
   (``load_alice``: first kept volume at 20 s of the TextGrid clock, checked against the
   study's word-rate regressor in tests/test_alice.py).
2. SmolLM2-135M ``mlp.out`` neurons of every 3rd layer (0, 3, ..., 27: 10 x 576 = 5,760
   neurons; restricted to keep the run short on a 2-core CPU) are recorded on the story,
   put on the story's TR grid by HRF convolution (``recording_to_tr``), and
   decomposed into K atoms by dictionary learning over all 362 TRs (``fit_atoms``; it sees
   no brain data). Each neuron's subgroup is its atom with the largest absolute loading.
3. Features = the mean time course of each subgroup (the loop's default features),
   high-pass filtered like the targets. Encoding: ``fit_encoding`` with 5 contiguous outer
   blocks, inner 5-fold alpha selection, no extra FIR delays (the features are already
   HRF-convolved), as in alice_encoding.
4. Mapping rule (each ROI is treated as its own "network", labels 1..6): an ROI is eligible
   when its baseline held-out r > ``min_r`` (0.1) and its block-permutation FDR p < 0.05
   (1,000 permutations). Subgroup g is assigned to the eligible ROI with the largest ridge
   coefficient of feature g (standardised features, model refitted on all TRs), if that
   coefficient is positive; otherwise "none" (not lesioned).
5. ``brain_loop``: every assigned subgroup is zeroed in the model, the story re-recorded,
   re-gridded, re-encoded with the same CV; per ROI held-out r before and after.
6. Control: the same loop with count- and layer-matched random lesions (the subgroup labels
   permuted within each layer, so every random set has the same number of neurons in each
   layer as its real subgroup) while the features stay the real subgroups' means.

Caveat written into the output: six ROIs that all follow the word rate are not six
networks; whichever ROI a subgroup is "assigned" to, the lesion removes one regressor that
every ROI uses, so the own-ROI hit rate has a chance level of 1/6 at best and is not
evidence of network specificity by itself.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from alice_encoding import AliceConfig, high_pass
from brainalign.brain.alice import load_alice
from brainalign.encoding import fit_encoding
from brainalign.interventions.loop import brain_loop, subgroup_features
from brainalign.patterns import fit_atoms
from brainalign.provenance import config_hash, provenance_block

logger = logging.getLogger("alice_loop")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "analysis" / "results" / "alice_loop.json"

CAVEAT = (
    "The 6 ROIs are not brain networks: they are 6 spheres in left/right temporal, parietal "
    "and frontal language cortex whose group-average time courses are all dominated by the "
    "word rate. Lesioning a subgroup removes (zeroes) one regressor that every ROI's model "
    "uses, so drops tend to be shared; own-ROI hits are near chance (1/6) unless the ROIs "
    "differ in which atom they rely on. Compare with the random-lesion control.")


@dataclass
class LoopConfig:
    """Settings of one run (stored in the output's provenance)."""

    model_name: str = "smollm2-135m"
    site: str = "mlp.out"
    layers: tuple = tuple(range(0, 30, 3))
    n_atoms: int = 8
    atom_alpha: float = 0.1
    min_r: float = 0.1
    fdr_q: float = 0.05
    n_perm: int = 1000
    n_outer_blocks: int = 5
    control: bool = True
    random_state: int = 0


def assign_subgroups(coef: np.ndarray, r: np.ndarray, eligible: np.ndarray, roi_names: list[str]) -> dict[int, str]:
    """Subgroup -> ROI with the largest positive coefficient among eligible ROIs (else "none").

    Parameters
    ----------
    coef : ndarray, shape (n_subgroups, n_rois)
        Ridge coefficients of the standardised subgroup features.
    r : ndarray, shape (n_rois,)
    eligible : ndarray of bool, shape (n_rois,)
    """
    mapping = {}
    for g in range(coef.shape[0]):
        weights = np.where(eligible, coef[g], -np.inf)
        best = int(np.argmax(weights))
        mapping[g] = roi_names[best] if np.isfinite(weights[best]) and weights[best] > 0 else "none"
    return mapping


def shuffled_within_layer(subgroup: np.ndarray, layer: np.ndarray, random_state: int) -> np.ndarray:
    """Subgroup labels permuted among the neurons of each layer (count- and layer-matched)."""
    rng = np.random.default_rng(random_state)
    out = subgroup.copy()
    for value in np.unique(layer):
        idx = np.flatnonzero(layer == value)
        out[idx] = subgroup[rng.permutation(idx)]
    return out


def run(data_path, config: LoopConfig, work_dir: Path) -> dict:
    """The whole analysis; returns the JSON document."""
    from brainalign.models.registry import load_model
    from brainalign.record import Recording, record_story
    from brainalign.timecourse import recording_to_tr

    started = time.perf_counter()
    alice_config = AliceConfig()
    data = load_alice(data_path, sphere_mm=alice_config.sphere_mm)
    roi_names = list(data.roi_names)
    group = np.stack([high_pass(data.timecourses[i], alice_config, data.tr_s)
                      for i in range(len(data.subjects))]).mean(0)           # (n_tr, n_rois)
    logger.info("first volume at %.1f s; group targets %s", data.first_volume_s, group.shape)

    loaded = load_model(config.model_name)
    layers = list(config.layers)
    tr_options = {"method": "hrf"}  # the TR grid is the story's scan (data.story)
    path = record_story(loaded, data.story, [config.site], work_dir / "atoms", layers=layers, progress=False)
    timecourses = recording_to_tr(Recording.open(path), **tr_options)
    patterns = fit_atoms(timecourses, n_atoms=config.n_atoms, train_runs="all", alpha=config.atom_alpha,
                         random_state=config.random_state)
    subgroup = np.asarray(patterns.subgroup)
    sizes = {int(g): int(np.sum(subgroup == g)) for g in range(config.n_atoms)}
    logger.info("atoms fitted; subgroup sizes %s", sizes)

    def features(data_tr: np.ndarray, _lesion_labels: np.ndarray) -> np.ndarray:
        # Always the real subgroups' means, so the control changes only what is lesioned.
        return high_pass(subgroup_features(data_tr, subgroup), alice_config, data.tr_s)

    X = features(np.asarray(timecourses.data), subgroup)
    mapping_fit = fit_encoding(X, group, None, n_blocks=config.n_outer_blocks, n_perm=config.n_perm,
                               fdr_alpha=config.fdr_q, random_state=config.random_state)
    eligible = (mapping_fit.r > config.min_r) & mapping_fit.significant(config.fdr_q)
    coef = np.asarray(mapping_fit.coef)                                      # (n_subgroups, n_rois)
    assignment = assign_subgroups(coef, mapping_fit.r, eligible, roi_names)
    logger.info("assignment %s", assignment)

    labels = np.arange(1, len(roi_names) + 1)
    encoding_options = {"n_blocks": config.n_outer_blocks, "n_perm": 0, "random_state": config.random_state}
    loop_options = dict(layers=layers, sites=[config.site], tr_options=tr_options,
                        encoding_options=encoding_options, features=features)
    loop_start = time.perf_counter()
    result = brain_loop(loaded, data.story, group, labels, roi_names, subgroup, assignment,
                        work_dir / "loop", **loop_options)
    loop_s = time.perf_counter() - loop_start

    control = None
    if config.control:
        layer_of_neuron = np.asarray(timecourses.neurons.layer)
        random_labels = shuffled_within_layer(subgroup, layer_of_neuron, config.random_state + 1)
        control = brain_loop(loaded, data.story, group, labels, roi_names, random_labels, assignment,
                             work_dir / "control", **loop_options)

    rows = []
    for i, g in enumerate(result.lesioned_subgroups):
        own = roi_names.index(result.lesioned_networks[i])
        row = {"subgroup": g, "assigned_roi": result.lesioned_networks[i], "n_neurons": result.subgroup_sizes[i],
               "r_after": dict(zip(roi_names, np.round(result.lesioned_r[i], 4).tolist())),
               "delta_r": dict(zip(roi_names, np.round(result.delta_r[i], 4).tolist())),
               "largest_drop_roi": result.largest_drop_network()[i],
               "own_roi_hit": result.own_network_hit()[i],
               "own_roi_delta": round(float(result.delta_r[i, own]), 4),
               "other_rois_mean_delta": round(float(np.delete(result.delta_r[i], own).mean()), 4)}
        if control is not None:
            row["control_delta_r"] = dict(zip(roi_names, np.round(control.delta_r[i], 4).tolist()))
            row["control_own_roi_delta"] = round(float(control.delta_r[i, own]), 4)
        rows.append(row)

    hits = result.own_network_hit()
    summary = {
        "rois": roi_names, "first_volume_s": data.first_volume_s, "n_atoms": config.n_atoms,
        "layers": layers,
        "n_neurons": int(subgroup.size), "subgroup_sizes": sizes,
        "mapping_r": dict(zip(roi_names, np.round(mapping_fit.r, 4).tolist())),
        "mapping_p_fdr": dict(zip(roi_names, np.round(mapping_fit.p_fdr, 4).tolist())),
        "eligible_rois": [n for n, e in zip(roi_names, eligible) if e],
        "assignment": {str(k): v for k, v in assignment.items()},
        "baseline_r": dict(zip(roi_names, np.round(result.baseline_r, 4).tolist())),
        "n_lesions": len(hits), "own_roi_hits": int(np.sum(hits)),
        "chance_hit_rate": round(1 / len(roi_names), 4),
        "mean_own_roi_delta": round(float(np.mean([r["own_roi_delta"] for r in rows])), 4) if rows else None,
        "mean_other_rois_delta": round(float(np.mean([r["other_rois_mean_delta"] for r in rows])), 4) if rows else None,
        "loop_s": round(loop_s, 1),
        "caveat": CAVEAT,
        "machine": "2-core CPU dev machine" if (os.cpu_count() or 0) <= 2 else f"{os.cpu_count()}-core CPU",
    }
    if control is not None:
        summary["control_own_roi_hits"] = int(np.sum(control.own_network_hit()))
        summary["control_mean_own_roi_delta"] = round(float(np.mean([r["control_own_roi_delta"] for r in rows])), 4) if rows else None
        summary["control_baseline_matches"] = bool(np.allclose(control.baseline_r, result.baseline_r, atol=1e-6))
    config_dict = asdict(config)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return {
        "summary": summary,
        "lesions": rows,
        "mapping": {"rule": f"ROI eligible if held-out r > {config.min_r} and block-permutation FDR p < {config.fdr_q}; "
                            "subgroup -> eligible ROI with the largest positive ridge coefficient, else none",
                    "coef": coef.tolist(), "alphas": mapping_fit.alphas.tolist(), "cv": mapping_fit.cv},
        "loop": result.to_dict(),
        "control": control.to_dict() if control is not None else None,
        "atoms_stability": patterns.stability,
        "provenance": provenance_block(script="analysis/alice_loop.py", data=str(data.path), config=config_dict,
                                       config_hash=config_hash(config_dict), model=loaded.provenance,
                                       seconds=summary["seconds"]),
    }


def print_table(document: dict) -> None:
    """Per lesion: assigned ROI, neurons, delta r in every ROI (and the control's own-ROI delta)."""
    s = document["summary"]
    rois = s["rois"]
    print("baseline r  " + " ".join(f"{n:>7}" for n in rois))
    print("            " + " ".join(f"{s['baseline_r'][n]:7.3f}" for n in rois))
    print(f"{'atom':>4} {'-> ROI':>6} {'n':>5} | " + " ".join(f"{n:>7}" for n in rois) + " | hit  ctrl_own")
    for row in document["lesions"]:
        ctrl = row.get("control_own_roi_delta")
        print(f"{row['subgroup']:>4} {row['assigned_roi']:>6} {row['n_neurons']:>5} | "
              + " ".join(f"{row['delta_r'][n]:+7.3f}" for n in rois)
              + f" | {'yes' if row['own_roi_hit'] else 'no ':>4} {'' if ctrl is None else f'{ctrl:+.3f}'}")
    print(f"own-ROI hits {s['own_roi_hits']}/{s['n_lesions']} (chance {s['chance_hit_rate']}); "
          f"control hits {s.get('control_own_roi_hits')}; total {s['seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="alice_brennan2016 folder (default: the shared data)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output JSON path")
    parser.add_argument("--n-atoms", type=int, default=LoopConfig.n_atoms)
    parser.add_argument("--no-control", action="store_true", help="skip the random-lesion control loop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = LoopConfig(n_atoms=args.n_atoms, control=not args.no_control)
    with tempfile.TemporaryDirectory(prefix="alice_loop_") as work_dir:
        document = run(args.data, config, Path(work_dir))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1, default=str))
    print_table(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
