"""The brain loop on the Brennan 2016 Alice ROIs: lesion the atom subgroup mapped to an ROI, re-encode.

Usage::

    python analysis/alice_loop.py [--data PATH] [--out PATH] [--n-atoms K] [--no-control]

Steps (brainalign's public API; the protocol of ``analysis/alice_encoding.py``, whose
settings and fit are imported rather than repeated):

1. Targets: the group mean of the subjects' raw 6 mm ROI time courses (LATL RATL LPTL LIPL
   LPreM LIFG); nothing is cleaned beforehand. The story carries the data's scan from the
   loader (``load_alice``: first kept volume at 20 s of the TextGrid clock).
2. SmolLM2-135M ``mlp.out`` neurons of every 3rd layer (0, 3, ..., 27: 10 x 576 = 5,760
   neurons; restricted to keep the run short on a 2-core CPU) are recorded on the story,
   put on the story's TR grid by HRF convolution (``recording_to_tr``), and decomposed into
   K atoms by dictionary learning over all 362 TRs (``fit_atoms``). The atoms see no brain
   data, but they do see the held-out blocks' neuron time courses: the subgroups must be
   one fixed set for every lesion, so they cannot be refitted per fold. Each neuron's
   subgroup is its atom with the largest absolute loading.
3. Features = the mean time course of each subgroup (the loop's default features), already
   HRF-convolved, so no FIR delays. Encoding: ``alice_encoding.fit`` (5 contiguous outer
   blocks, inner alpha selection; the run mean, a linear trend, cosine drifts below
   1/128 Hz and z-scoring fitted inside each outer fold, the same for targets and
   features).
4. Mapping rule (each ROI is treated as its own "network", labels 1..6): an ROI is eligible
   when its baseline held-out r > ``min_r`` (0.1) and its FDR p < 0.05 against 1,000
   mirrored shifts of the data (reversed and circularly shifted; since 2026-11-28: the
   Alice protocol's 10-TR block permutations are anti-conservative, see
   ``alice_encoding.py``, Deviation). Subgroup g is assigned to the eligible ROI with the largest ridge
   coefficient of feature g (the final model, refitted on all TRs), if that coefficient is
   positive; otherwise "none" (not lesioned).
5. ``brain_loop``: every assigned subgroup is zeroed in the model, the story re-recorded,
   re-gridded, re-encoded with the same CV; per ROI held-out r before and after.
6. Control: the same loop with a layer-matched random lesion per subgroup
   (``layer_matched``: as many neurons in each layer as the subgroup has, drawn from the
   neurons outside it) while the features stay the real subgroups' means.

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

from alice_encoding import AliceConfig, fit
from brainalign.brain.alice import load_alice
from brainalign.interventions import NeuronSet, layer_matched
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
    sphere_mm: int = 6
    site: str = "mlp.out"
    layers: tuple = tuple(range(0, 30, 3))
    n_atoms: int = 8
    atom_alpha: float = 0.1
    min_r: float = 0.1
    fdr_q: float = 0.05
    n_perm: int = 1000
    null: str = "mirror"
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
    if coef.shape[1] != len(roi_names):
        raise ValueError(f"coef has {coef.shape[1]} columns for {len(roi_names)} ROIs")
    mapping = {}
    for g in range(coef.shape[0]):
        weights = np.where(eligible, coef[g], -np.inf)
        best = int(np.argmax(weights))
        mapping[g] = roi_names[best] if np.isfinite(weights[best]) and weights[best] > 0 else "none"
    return mapping


def run(data_path, config: LoopConfig, work_dir: Path) -> dict:
    """The whole analysis; returns the JSON document."""
    from brainalign.models.registry import load_model
    from brainalign.record import Recording, record_story
    from brainalign.timecourse import recording_to_tr

    started = time.perf_counter()
    alice_config = AliceConfig(n_perm=config.n_perm, null=config.null,
                               n_outer_blocks=config.n_outer_blocks,
                               fdr_q=config.fdr_q, random_state=config.random_state)
    data = load_alice(data_path, sphere_mm=config.sphere_mm)
    roi_names = list(data.roi_names)
    group = data.timecourses.mean(0)                                         # (n_tr, n_rois), raw
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

    def features(data_tr: np.ndarray, _subgroup: np.ndarray) -> np.ndarray:
        return subgroup_features(data_tr, subgroup)

    X = features(np.asarray(timecourses.data), subgroup)
    # HRF-convolved features: no FIR delays (one coefficient row per subgroup)
    mapping_fit = fit(X, group, alice_config, delays=None, n_band_shifts=0)
    eligible = (mapping_fit.r > config.min_r) & mapping_fit.significant(config.fdr_q)
    coef = np.asarray(mapping_fit.coef)                                      # (n_subgroups, n_rois)
    if coef.shape[0] != X.shape[1]:
        raise ValueError(f"{coef.shape[0]} coefficient rows for {X.shape[1]} subgroup features")
    assignment = assign_subgroups(coef, mapping_fit.r, eligible, roi_names)
    logger.info("assignment %s", assignment)

    labels = np.arange(1, len(roi_names) + 1)
    encoding_options = {"n_blocks": config.n_outer_blocks, "tr_s": alice_config.tr_s,
                        "delays": None, "n_perm": 0, "random_state": config.random_state}
    loop_options = dict(layers=layers, sites=[config.site], tr_options=tr_options,
                        encoding_options=encoding_options, features=features)

    def lesions(assignment: dict[int, str], folder: str) -> dict:
        """brain_loop over ``assignment`` and its layer-matched random control."""
        loop_start = time.perf_counter()
        result = brain_loop(loaded, data.story, group, labels, roi_names, subgroup, assignment,
                            work_dir / folder / "loop", **loop_options)
        control = None
        if config.control:
            neurons = timecourses.neurons
            control_sets = {g: layer_matched(NeuronSet.from_table(neurons, subgroup == g),
                                             neurons, seed=config.random_state + 1 + g)
                            for g, roi in assignment.items() if roi != "none"}
            control = brain_loop(loaded, data.story, group, labels, roi_names, subgroup,
                                 assignment, work_dir / folder / "control",
                                 lesion_sets=control_sets, **loop_options)
        return loop_document(result, control, roi_names, assignment,
                             round(time.perf_counter() - loop_start, 1))

    protocol = lesions(assignment, "protocol")
    # Exploratory (not the rule above): eligibility by held-out r alone, no significance
    exploratory_eligible = mapping_fit.r > config.min_r
    exploratory_assignment = assign_subgroups(coef, mapping_fit.r, exploratory_eligible, roi_names)
    exploratory = lesions(exploratory_assignment, "exploratory") \
        if exploratory_assignment != assignment else None

    summary = {
        "rois": roi_names, "sphere_mm": config.sphere_mm,
        "first_volume_s": data.first_volume_s, "n_atoms": config.n_atoms,
        "layers": layers,
        "n_neurons": int(subgroup.size), "subgroup_sizes": sizes,
        "mapping_r": dict(zip(roi_names, np.round(mapping_fit.r, 4).tolist())),
        "mapping_p_fdr": dict(zip(roi_names, np.round(mapping_fit.p_fdr, 4).tolist())),
        "eligible_rois": [n for n, e in zip(roi_names, eligible) if e],
        "chance_hit_rate": round(1 / len(roi_names), 4),
        "protocol": protocol["summary"],
        "exploratory_r_only": None if exploratory is None else {
            "eligible_rois": [n for n, e in zip(roi_names, exploratory_eligible) if e],
            **exploratory["summary"],
            "note": "exploratory: ROIs eligible by held-out r > min_r alone, without the "
                    "significance the protocol requires"},
        "caveat": CAVEAT,
        "machine": "2-core CPU dev machine" if (os.cpu_count() or 0) <= 2 else f"{os.cpu_count()}-core CPU",
    }
    config_dict = asdict(config)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return {
        "summary": summary,
        "mapping": {"rule": f"ROI eligible if held-out r > {config.min_r} and FDR p < {config.fdr_q} "
                            f"({config.null} null of r); "
                            "subgroup -> eligible ROI with the largest positive ridge coefficient, else none",
                    "features": "subgroup means, HRF-convolved, no FIR delays; cleaned inside "
                                "each outer fold like the targets",
                    "control": "per lesioned subgroup, a layer-matched random set drawn outside it "
                               "(layer_matched), features unchanged",
                    "coef": coef.tolist(), "alphas": mapping_fit.alphas.tolist(), "cv": mapping_fit.cv},
        "protocol": protocol,
        "exploratory_r_only": exploratory,
        "atoms_stability": patterns.stability,
        "provenance": provenance_block(script="analysis/alice_loop.py", data=str(data.path), config=config_dict,
                                       config_hash=config_hash(config_dict), model=loaded.provenance,
                                       seconds=summary["seconds"]),
    }


def loop_document(result, control, roi_names: list[str], assignment: dict[int, str],
                  seconds: float) -> dict:
    """Per-lesion rows and a summary of one brain loop (and its control, if run)."""
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

    def mean_of(key):
        return round(float(np.mean([r[key] for r in rows])), 4) if rows else None

    summary = {"assignment": {str(k): v for k, v in assignment.items()},
               "baseline_r": dict(zip(roi_names, np.round(result.baseline_r, 4).tolist())),
               "n_lesions": len(hits), "own_roi_hits": int(np.sum(hits)),
               "mean_own_roi_delta": mean_of("own_roi_delta"),
               "mean_other_rois_delta": mean_of("other_rois_mean_delta"), "loop_s": seconds}
    if control is not None:
        summary.update(control_own_roi_hits=int(np.sum(control.own_network_hit())),
                       control_mean_own_roi_delta=mean_of("control_own_roi_delta"),
                       control_baseline_matches=bool(np.allclose(control.baseline_r,
                                                                 result.baseline_r, atol=1e-6)))
    return {"summary": summary, "lesions": rows, "loop": result.to_dict(),
            "control": control.to_dict() if control is not None else None}


def print_table(document: dict) -> None:
    """Per lesion: assigned ROI, neurons, delta r in every ROI (and the control's own-ROI
    delta), for the protocol's assignment and the exploratory one."""
    s = document["summary"]
    rois = s["rois"]
    print("mapping r   " + " ".join(f"{s['mapping_r'][n]:7.3f}" for n in rois))
    print("p_FDR       " + " ".join(f"{s['mapping_p_fdr'][n]:7.3f}" for n in rois))
    for name in ("protocol", "exploratory_r_only"):
        block = document[name]
        if block is None:
            continue
        print(f"{name}: " + ("no subgroup assigned, nothing lesioned" if not block["lesions"]
                             else ""))
        print(f"{'atom':>4} {'-> ROI':>6} {'n':>5} | " + " ".join(f"{n:>7}" for n in rois)
              + " | hit  ctrl_own")
        for row in block["lesions"]:
            ctrl = row.get("control_own_roi_delta")
            print(f"{row['subgroup']:>4} {row['assigned_roi']:>6} {row['n_neurons']:>5} | "
                  + " ".join(f"{row['delta_r'][n]:+7.3f}" for n in rois)
                  + f" | {'yes' if row['own_roi_hit'] else 'no ':>4} {'' if ctrl is None else f'{ctrl:+.3f}'}")
        summary = block["summary"]
        print(f"own-ROI hits {summary['own_roi_hits']}/{summary['n_lesions']} (chance "
              f"{s['chance_hit_rate']}); control hits {summary.get('control_own_roi_hits')}")
    print(f"total {s['seconds']} s")


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
