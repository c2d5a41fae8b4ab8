"""Study A organisation metrics for several language models on one story and one simulation.

Usage::

    python analysis/organisation_metrics.py [--models minilm-l6 smollm2-135m gemma3-270m]
        [--out PATH] [--cache DIR] [--n-atoms 16] [--n-subjects 4] [--n-perm 200]

Steps (all through brainalign's public API):

1. Story: the bundled story (``bundled_story()``, 2 runs, TR 2 s). Each installed model
   reads it; the block FFN outputs (``mlp.out``, the neurons of study A) of every layer
   are pooled to words, put on the TR grid (Lanczos) and z-scored per run.
2. Atoms: ``fit_atoms`` (sparse dictionary learning, K atoms on all runs) per model.
3. Simulated fMRI, the same for every model: ``simulate_fmri`` on fsaverage5 with the
   Yeo-7 networks, planted from k-means subgroups of the *union* of all models' neurons
   (so no single model's atoms are the planted ones by construction; a model whose
   neurons are more numerous still contributes more candidate subgroups).
4. Per model and simulated subject: ridge encoding of the BOLD from the model's atoms
   (``fit_encoding``, FIR delays 1-4 TRs), delay-summed coefficient maps, then
   ``map_patterns`` with the spin test on each subject's maps (for consistency) and on
   the subject-mean maps (for compactness).
5. Metrics (:mod:`brainalign.networks.metrics`): diversity (effective number of atoms
   from subgroup sizes; effective rank of the atoms), consistency (mean pairwise Cohen's
   kappa / adjusted Rand of atom -> network assignments across subjects), compactness
   (networks per atom, atoms per network, networks covered, share of atoms assigned).

Writes JSON with one entry per model (metrics, sizes, group assignments), the simulation
parameters and provenance. Models that are not installed are listed as skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from brainalign.encoding import fit_encoding, mean_over_subjects, pattern_maps
from brainalign.models.registry import is_installed, load_model
from brainalign.networks import load_atlas, map_patterns, organisation_metrics
from brainalign.patterns import fit_atoms
from brainalign.provenance import config_hash, provenance_block
from brainalign.record import Recording, record_story
from brainalign.simulate import simulate_fmri, space_from_atlas
from brainalign.stimuli import bundled_story
from brainalign.timecourse import DEFAULT_DELAYS, recording_to_tr

logger = logging.getLogger("organisation_metrics")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "analysis" / "results" / "organisation_metrics.json"
DEFAULT_CACHE = Path.home() / ".cache" / "brainalign" / "organisation_metrics"


@dataclass
class OrganisationConfig:
    """Settings of one run (stored in the output's provenance)."""

    models: list[str] = field(default_factory=lambda: ["minilm-l6", "smollm2-135m",
                                                       "gemma3-270m"])
    site: str = "mlp.out"
    n_atoms: int = 16
    atom_alpha: float = 0.1
    n_subjects: int = 4
    n_patterns_planted: int = 7
    snr: float = 1.0
    delays: tuple[int, ...] = DEFAULT_DELAYS
    n_perm_mapping: int = 200
    alpha: float = 0.05
    atlas: str = "yeo7"
    space: str = "fsaverage5"
    random_state: int = 0


def model_timecourses(name: str, story, config: OrganisationConfig, cache: Path):
    """Record a model on the story (cached on disk) and return its TR time courses."""
    loaded = load_model(name)
    path = record_story(loaded, story, [config.site], cache / name, progress=False)
    return recording_to_tr(Recording.open(path), method="lanczos", zscore=True)


def subject_maps(atoms: np.ndarray, simulation, config: OrganisationConfig) -> list[np.ndarray]:
    """One encoding map per atom (``pattern_maps``: delays summed), (n_atoms, n_targets),
    for every subject."""
    maps = []
    for subject, bold in enumerate(simulation.bold):
        result = fit_encoding(atoms, bold, simulation.runs, delays=list(config.delays),
                              n_perm=0, random_state=config.random_state)
        maps.append(pattern_maps(result))
        logger.info("  encoding subject %d: median r %.3f", subject, np.nanmedian(result.r))
    return maps


def run(config: OrganisationConfig, cache: Path) -> dict:
    story = bundled_story()
    atlas = load_atlas(config.atlas, config.space)
    installed = [m for m in config.models if is_installed(m)]
    skipped = [m for m in config.models if m not in installed]
    timecourses = {}
    for name in installed:
        started = time.time()
        timecourses[name] = model_timecourses(name, story, config, cache)
        logger.info("%s: %d TRs x %d neurons (%.0f s)", name, *timecourses[name].data.shape,
                    time.time() - started)
    reference = timecourses[installed[0]]
    union = np.hstack([timecourses[m].data for m in installed])
    simulation = simulate_fmri(union, space_from_atlas(atlas), runs=reference.runs,
                               tr_s=story.tr_s, n_patterns=config.n_patterns_planted,
                               n_subjects=config.n_subjects, snr=config.snr,
                               random_state=config.random_state)
    results = {}
    for name in installed:
        started = time.time()
        patterns = fit_atoms(timecourses[name], n_atoms=config.n_atoms, train_runs="all",
                             alpha=config.atom_alpha, random_state=config.random_state)
        atoms = np.asarray(patterns.atoms, dtype=np.float64)
        maps = subject_maps(atoms, simulation, config)
        names = [f"atom{k:02d}" for k in range(config.n_atoms)]
        mapping_kwargs = dict(n_perm=config.n_perm_mapping, alpha=config.alpha,
                              pattern_names=names, random_state=config.random_state)
        group = map_patterns(mean_over_subjects(maps), atlas, **mapping_kwargs)
        per_subject = [map_patterns(m, atlas, **mapping_kwargs) for m in maps]
        metrics = organisation_metrics(patterns.subgroup, [group], atoms=atoms)
        consistency = organisation_metrics(patterns.subgroup, per_subject)
        entry = metrics.to_dict()
        entry.update(kappa=consistency.kappa, adjusted_rand=consistency.adjusted_rand,
                     agreement=consistency.agreement,
                     n_neurons=int(timecourses[name].data.shape[1]),
                     n_layers=int(len(np.unique(timecourses[name].neurons.layer))),
                     group_assignments=dict(zip(group.patterns, group.assigned)),
                     subject_assignments=[m.assigned for m in per_subject],
                     null=group.null, seconds=round(time.time() - started, 1))
        results[name] = entry
        logger.info("%s: diversity %.2f, kappa %s, networks/atom %.2f", name,
                    entry["diversity"], entry["kappa"], entry["networks_per_atom"])
    return {"models": results, "skipped_models": skipped,
            "simulation": {"planted_from": "union of the models' mlp.out neurons",
                           "n_subjects": config.n_subjects, "snr": config.snr,
                           "space": config.space, "atlas": config.atlas,
                           "n_tr": int(len(simulation.runs)),
                           "planted_network_pattern":
                               np.asarray(simulation.truth.network_pattern).tolist()}}


def strict_json(value):
    """NaN and infinities as null, recursively (the output is strict JSON)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def print_table(document: dict) -> None:
    columns = ("diversity", "spectral_diversity", "kappa", "adjusted_rand",
               "networks_per_atom", "atoms_per_network", "networks_covered", "share_assigned")
    print("model".ljust(14) + "".join(c[:12].rjust(13) for c in columns))
    for name, entry in document["models"].items():
        cells = []
        for column in columns:
            value = entry[column]
            cells.append("nan".rjust(13) if value is None or value != value
                         else f"{value:13.3f}")
        print(name.ljust(14) + "".join(cells))
    if document["skipped_models"]:
        print("not installed:", ", ".join(document["skipped_models"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = OrganisationConfig()
    parser.add_argument("--models", nargs="+", default=defaults.models)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where model recordings are kept between runs")
    parser.add_argument("--n-atoms", type=int, default=defaults.n_atoms)
    parser.add_argument("--n-subjects", type=int, default=defaults.n_subjects)
    parser.add_argument("--n-perm", type=int, default=defaults.n_perm_mapping)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = OrganisationConfig(models=list(args.models), n_atoms=args.n_atoms,
                                n_subjects=args.n_subjects, n_perm_mapping=args.n_perm)
    started = time.time()
    document = run(config, args.cache)
    document["provenance"] = provenance_block(script="analysis/organisation_metrics.py",
                                              config=asdict(config),
                                              config_hash=config_hash(asdict(config)),
                                              seconds=round(time.time() - started, 1),
                                              machine="2-core CPU dev machine")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(strict_json(document), indent=2, default=str,
                                   allow_nan=False))
    print_table(document)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
