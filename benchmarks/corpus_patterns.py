"""Benchmark: atoms of a long reference corpus, recorded and fitted out of core.

The default model (SmolLM2-135M-Instruct, ``mlp.out``: 30 layers x 576 = 17,280 neurons)
reads the first ``--words`` words of Moby-Dick (``make corpora``), timed by the
speech-rate model on a 2 s grid and recorded straight to TR time courses on disk
(:func:`brainalign.record.record_corpus`). K = 64 dictionary atoms are then fitted on the
cleaned corpus with the time courses left on disk (``fit_atoms(..., in_memory=False)``),
on the first half of the TRs and on all of them (with ``--with-peer`` also in memory on all
of them). Each step runs in a fresh process, whose peak resident memory (``ru_maxrss``) is
recorded: out of core it should not grow with the corpus length. The recording step's
figures are kept in ``WORK/record_step.json``; a rerun with the same ``--work`` reuses the
recording and those figures, and refits.

Writes the ``corpus`` entry of ``benchmarks/results/patterns.json`` (the other entries,
written by ``benchmarks/patterns.py``, are kept). Targets (issue 16): 100k words recorded
and fitted in <= 15 minutes on the 2-core CPU machine; peak memory independent of length.

    python benchmarks/corpus_patterns.py [--words 100000] [--work DIR] [--out PATH] [--with-peer]
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

RESULTS = Path(__file__).resolve().parent / "results"
N_ATOMS = 64
#: Outer iterations of the full-batch dictionary learning (each reads the file twice).
MAX_ITER = 30

#: Each step, run as ``python -c STEP WORK [HALF]`` in a child process.
RECORD_STEP = """
import sys, time
from pathlib import Path
from brainalign.record import record_corpus
t = time.perf_counter()
tc = record_corpus("smollm2-135m-instruct-q4", "moby-dick", int(sys.argv[2]), Path(sys.argv[1]),
                   device="cpu", progress=False)
print("RESULT", time.perf_counter() - t, tc.n_tr, tc.n_neurons, len(set(tc.runs.tolist())))
"""
FIT_STEP = """
import sys, time
from pathlib import Path
import numpy as np
from brainalign.pipeline.bands import cleaned_runs_on_disk
from brainalign.pipeline.config import validate
from brainalign.patterns import fit_atoms
from brainalign.record import load_corpus_timecourses
work, share, in_memory = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "memory"
tc = load_corpus_timecourses(next(p for p in work.iterdir() if p.is_dir() and p.name != "clean"))
(work / "clean").mkdir(exist_ok=True)
t = time.perf_counter()
cleaned = cleaned_runs_on_disk(tc, validate({}), work / "clean" / "corpus.npy")
clean_s = time.perf_counter() - t
rows = np.arange(int(round(share * tc.n_tr)))
data = np.asarray(cleaned.data) if in_memory else cleaned.data
patterns = fit_atoms(data, %d, train_rows=rows, neurons=tc.neurons, runs=tc.runs,
                     times_s=tc.times_s, in_memory=in_memory, random_state=0, device="cpu",
                     max_iter=%d)
print("RESULT", clean_s, time.perf_counter() - t - clean_s, len(rows))
""" % (N_ATOMS, MAX_ITER)


def run_step(code: str, *args: str) -> dict:
    """Run ``code`` in a child process: its RESULT line, wall seconds and peak RSS (MiB)."""
    probe = ("import resource, subprocess, sys\n"
             "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "sys.stderr.write(done.stderr[-4000:])\n"
             "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "print(done.stdout)\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-c", code, *args],
                          capture_output=True, text=True,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    wall_s = time.perf_counter() - started
    lines = done.stdout.strip().splitlines()
    code_rc, rss_kib = (int(x) for x in lines[0].split())
    result = next((line.split()[1:] for line in lines if line.startswith("RESULT")), None)
    if code_rc != 0 or result is None:
        raise RuntimeError(f"step failed ({code_rc}):\n{done.stderr[-3000:]}")
    return {"values": [float(x) for x in result], "process_wall_s": round(wall_s, 1),
            "peak_rss_mib": round(rss_kib / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/brainalign-bench-corpus"))
    parser.add_argument("--out", type=Path, default=RESULTS / "patterns.json")
    parser.add_argument("--with-peer", action="store_true",
                        help="also fit in memory on all TRs (the peer whose memory grows)")
    args = parser.parse_args()

    from brainalign.provenance import provenance_block

    args.work.mkdir(parents=True, exist_ok=True)
    measured = args.work / "record_step.json"  # a recording made by an earlier run of this script
    if measured.exists():
        record = json.loads(measured.read_text())
        print(f"recording already made: {record}", flush=True)
    else:
        print(f"recording {args.words} words of moby-dick", flush=True)
        record = run_step(RECORD_STEP, str(args.work), str(args.words))
        measured.write_text(json.dumps(record))
    record_s, n_tr, n_neurons, n_runs = record["values"]
    print(f"  {record}", flush=True)
    fits = {}
    steps = [("out_of_core_half", 0.5, "disk"), ("out_of_core_all", 1.0, "disk")]
    if args.with_peer:
        steps.append(("in_memory_all", 1.0, "memory"))
    for name, share, mode in steps:
        print(f"fitting {N_ATOMS} atoms: {name}", flush=True)
        step = run_step(FIT_STEP, str(args.work), str(share), mode)
        clean_s, fit_s, rows = step["values"]
        fits[name] = {"n_tr": int(rows), "clean_s": round(clean_s, 1), "fit_s": round(fit_s, 1),
                      "peak_rss_mib": step["peak_rss_mib"]}
        print(f"  {fits[name]}", flush=True)
    total_s = record_s + fits["out_of_core_all"]["clean_s"] + fits["out_of_core_all"]["fit_s"]
    corpus = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "note": "2-core CPU dev machine; other jobs may share it (see the note)"},
        "model": "smollm2-135m-instruct-q4", "site": "mlp.out", "n_neurons": int(n_neurons),
        "corpus": "moby-dick", "n_words": args.words, "n_tr": int(n_tr), "n_runs": int(n_runs),
        "n_atoms": N_ATOMS, "max_iter": MAX_ITER,
        "method": "dictionary (full batch, time courses read from disk)",
        "record_s": round(record_s, 1), "record_peak_rss_mib": record["peak_rss_mib"],
        "fits": fits,
        "wall_s_record_and_fit": round(total_s, 1), "target_wall_s": 900,
        "peak_mem_ratio_all_over_half_out_of_core": round(
            fits["out_of_core_all"]["peak_rss_mib"] / fits["out_of_core_half"]["peak_rss_mib"], 3),
        "provenance": provenance_block(stage="benchmark-corpus-patterns"),
    }
    document = json.loads(args.out.read_text()) if args.out.exists() else {}
    document["corpus"] = corpus
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2))
    print(json.dumps({k: v for k, v in corpus.items() if k != "provenance"}, indent=2))


if __name__ == "__main__":
    main()
