"""Benchmark: a BIDS / fMRIPrep study of 4 and of 12 subjects, end to end, from one TOML.

The synthetic dataset (:func:`brainalign.simulate.bids.make_fmriprep_dataset`: 12 subjects,
2 stories x 2 runs, fsaverage5 GIfTI, fMRIPrep confounds with real-looking motion, a story
signal planted in the Yeo-7 somatomotor network) is analysed by the study file
:data:`STUDY_TOML` (15 lines), run as ``brainalign run`` in a fresh process: once on
subjects 01-04 (``fmri.bids_subjects``) and once on all 12. Each run's peak resident memory
is its process's ``ru_maxrss``; subjects are loaded and fitted one at a time, so it should
not grow with their number.

Rows of the JSON (default ``benchmarks/results/bids.json``):

``runs.<n>``            wall_s and peak_rss_mib of the n-subject study;
``peak_mem_ratio_12_over_4``  target <= 1.2;
``wall_s``              the 12-subject study;
``planted``             per subject of the 12-subject study: mean held-out r over the planted
                        vertices (target >= 0.3) and over the others (with subject-level
                        permutations: the FDR-significant shares);
``group``               the group maps (12 subjects): the share of planted and of other
                        vertices with p_FWE < 0.05 (target for the others: <= 0.06).

    python benchmarks/bids.py [--work DIR] [--out PATH] [--snr 1.0] [--measured JSON]

Nothing asserts a speed; the figures are for the issue's targets and the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from brainalign.provenance import provenance_block

RESULTS = Path(__file__).resolve().parent / "results"

#: The study, as a neuroscientist would write it for an fMRIPrep dataset (15 lines):
#: the default model (SmolLM2-135M-Instruct), fsaverage5, 16 atoms + the word-rate band,
#: nilearn's default confounds plus scrubbing, leave-one-story-out encoding, Yeo-7 mapping
#: and group maps (sign flips, cluster FWE), which give the significance. Left out, as the
#: slow steps of whole-brain banded ridge on 2 cores: the per-subject permutation null of r
#: and the band-shift null of unique r.
STUDY_TOML = """\
[study]
out = "{out}"
[stories]
bundled = false
[fmri]
source = "bids"
bids = "{bids}"
bids_subjects = {subjects}
[confounds]
strategy = ["motion", "high_pass", "wm_csf", "scrub"]
[patterns]
n_atoms = 16
[encoding]
n_permutations = 0
n_band_shifts = 0
"""


def run_study_process(toml: Path) -> dict:
    """``brainalign run TOML`` in a child process: wall seconds and its peak RSS (MiB)."""
    probe = ("import resource, subprocess, sys, time\n"
             "t = time.perf_counter()\n"
             "code = subprocess.call(sys.argv[1:])\n"
             "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
             "print(code, time.perf_counter() - t, rss)\n")
    command = [sys.executable, "-c", probe, sys.executable, "-c",
               "from brainalign.cli import main; main()", "run", str(toml)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    last = done.stdout.strip().splitlines()[-1].split()
    code, wall_s, rss_kib = int(last[0]), float(last[1]), int(last[2])
    if code != 0:
        raise RuntimeError(f"brainalign run {toml} failed ({code}):\n{done.stderr[-3000:]}")
    return {"wall_s": round(wall_s, 1), "peak_rss_mib": round(rss_kib / 1024, 1)}


def planted_scores(out: Path, planted: np.ndarray) -> dict:
    """Per subject: mean r over planted vertices, FDR-significant share of the others."""
    from brainalign.encoding import load

    rows = {}
    for path in sorted(out.glob("cache/encoding-*/*/data/sub-*")):
        result = load(path)
        rows[path.name] = {"planted_r_mean": float(np.nanmean(result.r[planted])),
                           "null_r_mean": float(np.nanmean(result.r[~planted]))}
        if np.isfinite(result.p_fdr).any():  # encoding.n_permutations > 0
            significant = np.nan_to_num(result.p_fdr, nan=1.0) < 0.05
            rows[path.name].update(
                planted_significant_share=float(significant[planted].mean()),
                null_significant_share=float(significant[~planted].mean()))
    return rows


def group_scores(out: Path, planted: np.ndarray) -> dict:
    """The group maps (``desc-group*_stat-pfwe`` GIfTI pairs in ``out/maps``): the share of
    vertices with p_FWE < alpha (``group.alpha``, default 0.05) inside and outside the
    planted region."""
    import nibabel as nib

    from brainalign.pipeline.config import SCHEMA

    alpha = SCHEMA["group"]["alpha"].default
    found = {}
    for left in sorted((out / "maps").glob("*hemi-L_desc-group*_stat-pfwe_*.func.gii")):
        values = np.concatenate([
            np.asarray(nib.load(str(left).replace("hemi-L", f"hemi-{h}")).darrays[0].data)
            for h in ("L", "R")])
        significant = values < alpha
        name = left.name.split("_desc-")[1].split("_")[0] + "_pfwe"
        found[name] = {"planted_significant_share": float(significant[planted].mean()),
                       "null_significant_share": float(significant[~planted].mean()),
                       "file": left.name}
    return {"alpha": alpha, "maps": found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/brainalign-bench-bids"))
    parser.add_argument("--out", type=Path, default=RESULTS / "bids.json")
    parser.add_argument("--snr", type=float, default=1.0)
    parser.add_argument("--score-only", type=json.loads, default=None, metavar="RUNS_JSON",
                        help="do not run the studies: score the outputs already in --work and "
                             "take each run's wall time and peak memory from this JSON "
                             '(e.g. \'{"4": {"wall_s": 1846.4, "peak_rss_mib": 1328.3}}\'; a '
                             "run left out is recorded as not measured)")
    parser.add_argument("--measured", type=json.loads, default={}, metavar="RUNS_JSON",
                        help="runs already measured, in --score-only's form: these are not "
                             "rerun (their study folders in --work are scored as they are); "
                             "the other subject counts are run")
    args = parser.parse_args()

    from brainalign.simulate.bids import make_fmriprep_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = make_fmriprep_dataset(args.work / "synthetic-bids", n_subjects=12,
                                    spaces=("fsaverage5",), snr=args.snr, random_state=0)
    build_s = time.perf_counter() - started
    planted = np.concatenate([dataset.planted["fsaverage5"][h] for h in ("L", "R")])
    runs = {}
    for n in (4, 12):
        if args.score_only is not None:
            runs[n] = args.score_only.get(str(n), {"wall_s": None, "peak_rss_mib": None})
            continue
        if str(n) in args.measured:
            runs[n] = args.measured[str(n)]
            continue
        out = args.work / f"study-{n}"
        if out.exists():  # a study's cache would skip the stages being measured
            raise SystemExit(f"{out} exists: remove it, or pass its run in --measured")
        toml = args.work / f"study-{n}.toml"
        toml.write_text(STUDY_TOML.format(out=out, bids=dataset.root,
                                          subjects=json.dumps(dataset.subjects[:n])))
        print(f"{n} subjects: brainalign run {toml}", flush=True)
        runs[n] = run_study_process(toml)
        print(f"  {runs[n]}", flush=True)
    measured = all(runs[n]["peak_rss_mib"] for n in (4, 12))
    out12 = args.work / "study-12"
    document = {
        "benchmark": "bids",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "dataset": {**dataset.to_dict(), "build_s": round(build_s, 1)},
        "study_toml": STUDY_TOML,
        "study_toml_lines": len(STUDY_TOML.strip().splitlines()),
        "runs": {str(n): value for n, value in runs.items()},
        "peak_mem_ratio_12_over_4": (round(runs[12]["peak_rss_mib"] / runs[4]["peak_rss_mib"], 3)
                                     if measured else None),
        "wall_s": runs[12]["wall_s"],
        "planted": planted_scores(out12, planted),
        "group": group_scores(out12, planted),
        "targets": {"peak_mem_ratio_12_over_4": "<= 1.2", "planted_r_mean": ">= 0.3",
                    "null_significant_share": "<= 0.06"},
        "provenance": provenance_block(stage="benchmark-bids"),
    }
    per_subject = document["planted"].values()
    group_r = document["group"]["maps"].get("group_pfwe", {})  # the group map of r
    document["planted_summary"] = {
        "planted_r_mean_min": min(v["planted_r_mean"] for v in per_subject),
        "planted_r_mean_mean": float(np.mean([v["planted_r_mean"] for v in per_subject])),
        "null_r_mean_max": max(v["null_r_mean"] for v in per_subject),
        "group_planted_significant_share": group_r.get("planted_significant_share"),
        "group_null_significant_share": group_r.get("null_significant_share")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(json.dumps({k: document[k] for k in ("runs", "peak_mem_ratio_12_over_4", "wall_s",
                                               "planted_summary")}, indent=2))


if __name__ == "__main__":
    main()
