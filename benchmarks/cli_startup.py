"""Benchmark: start-up time of the ``brainalign`` command against a bare Python.

Rows (wall-clock seconds of a whole subprocess, best of ``--repeats``, all in one run):

bare        ``python -c pass``: the interpreter's own start-up, the floor.
help        ``brainalign --help``.
story_info  ``brainalign story info <the bundled story's folder>`` (reads and summarises
            the story's TextGrids).
torch       ``python -c "import torch"``: for reference, what every command paid before
            the CLI imported torch only where a model is loaded.

``brainalign`` is the console script next to the running interpreter (not a pyenv shim),
so the figures are the command's own. Writes JSON (default
``benchmarks/results/cli_startup.json``); nothing asserts a speed.

    python benchmarks/cli_startup.py [--repeats 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from brainalign.provenance import provenance_block
from brainalign.stimuli import bundled_story

RESULTS = Path(__file__).resolve().parent / "results"


def brainalign_command() -> list[str]:
    """The installed console script beside this interpreter, else the same via ``-c``."""
    script = Path(sys.executable).parent / "brainalign"
    if script.is_file():
        return [str(script)]
    found = shutil.which("brainalign")
    return [found] if found else [sys.executable, "-c", "from brainalign.cli import main; main()"]


def best_of(command: list[str], repeats: int) -> tuple[float, list[float]]:
    """Fastest wall-clock seconds of ``repeats`` runs of ``command`` (and all of them)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return min(times), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "cli_startup.json")
    args = parser.parse_args()

    story = bundled_story().source
    cli = brainalign_command()
    commands = {
        "bare": [sys.executable, "-c", "pass"],
        "help": [*cli, "--help"],
        "story_info": [*cli, "story", "info", str(story)],
        "torch": [sys.executable, "-c", "import torch"],
    }
    rows = []
    for name, command in commands.items():
        best, times = best_of(command, args.repeats)
        rows.append({"name": name, "command": " ".join(command), "best_s": round(best, 4),
                     "times_s": [round(t, 4) for t in times]})
        print(f"{name:<11} best {best:.3f} s  ({', '.join(f'{t:.3f}' for t in times)})")
    best = {row["name"]: row["best_s"] for row in rows}
    summary = {
        "device": f"{platform.machine()} CPU, {os.cpu_count()} core(s)",
        "bare_python_s": best["bare"],
        "help_s": best["help"],
        "story_info_s": best["story_info"],
        "help_over_bare_s": round(best["help"] - best["bare"], 4),
        "story_info_over_bare_s": round(best["story_info"] - best["bare"], 4),
        "import_torch_s": best["torch"],
        "target_s": 1.5,
    }
    document = {"summary": summary, "rows": rows,
                "settings": {"repeats": args.repeats, "statistic": "best (minimum) wall-clock",
                             "story": str(story)},
                "provenance": provenance_block(stage="benchmark", benchmark="cli_startup")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
