"""``brainalign patterns``: study A atoms and study B functional networks from the shell."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from brainalign.cli import main


@main.group("patterns")
def patterns_group() -> None:
    """Atoms of neuron time courses (study A) and ICA networks of neurons (study B)."""


@patterns_group.command("atoms")
@click.argument("timecourses_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n-atoms", default=64, show_default=True, help="Number of atoms K.")
@click.option("--train-runs", required=True,
              help="Comma-separated run labels to fit on, or 'all'.")
@click.option("--held-out-runs", default="", help="Comma-separated run labels never to fit on.")
@click.option("--method", type=click.Choice(["dictionary", "kmeans", "ica"]), default="dictionary",
              show_default=True)
@click.option("--alpha", default=0.1, show_default=True, help="L1 penalty (dictionary).")
@click.option("--seed", default=0, show_default=True)
@click.option("--stability-seeds", default="", help="Comma-separated extra seeds.")
@click.option("--split-half/--no-split-half", default=False)
@click.option("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
def atoms_command(timecourses_dir: Path, out_dir: Path, n_atoms: int, train_runs: str,
                  held_out_runs: str, method: str, alpha: float, seed: int, stability_seeds: str,
                  split_half: bool, device: str | None) -> None:
    """Fit atoms on TIMECOURSES_DIR (a saved NeuronTimecourses) and save Patterns to OUT_DIR."""
    from brainalign.cli import check_device, check_out_dir
    from brainalign.patterns import fit_atoms
    from brainalign.timecourse import NeuronTimecourses

    device = check_device(device)
    check_out_dir(out_dir, "OUT_DIR")
    try:
        timecourses = NeuronTimecourses.load(timecourses_dir, mmap=True)
    except (ValueError, OSError) as err:
        raise click.ClickException(f"TIMECOURSES_DIR: {err}") from None
    try:
        patterns = fit_atoms(
            timecourses, n_atoms, train_runs="all" if train_runs == "all" else _ints(train_runs),
            held_out_runs=_ints(held_out_runs), method=method, alpha=alpha, random_state=seed,
            stability_seeds=_ints(stability_seeds), split_half=split_half, device=device)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    path = patterns.save(out_dir)
    sizes = np.bincount(patterns.subgroup[patterns.subgroup >= 0], minlength=n_atoms)
    click.echo(f"{n_atoms} atoms on runs {patterns.fit_runs}; subgroup sizes {sizes.tolist()}")
    click.echo(f"wrote {path}")


@patterns_group.command("networks")
@click.argument("activations", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("neurons_npz", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n-components", default=10, show_default=True)
@click.option("--z-threshold", default=1.96, show_default=True,
              help="Threshold on z-scored maps (the study's lesion networks used 3.6).")
@click.option("--two-sided/--one-sided", default=False)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default=None)
def networks_command(activations: Path, neurons_npz: Path, out_dir: Path, n_components: int,
                     z_threshold: float, two_sided: bool, seed: int, device: str | None) -> None:
    """Functional networks of ACTIVATIONS (.npy, tokens x neurons) with NEURONS_NPZ (layer, site, unit)."""
    from brainalign.cli import check_device, check_out_dir
    from brainalign.patterns import find_functional_networks
    from brainalign.record.neurons import NeuronTable

    device = check_device(device)
    check_out_dir(out_dir, "OUT_DIR")
    try:
        with np.load(neurons_npz) as table:
            neurons = NeuronTable(table["layer"], table["site"], table["unit"])
    except (ValueError, OSError, KeyError) as err:
        raise click.ClickException(f"NEURONS_NPZ {neurons_npz}: not a neuron table (.npz with "
                                   f"layer, site, unit): {err}") from None
    try:
        data = np.load(activations, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise click.ClickException(f"ACTIVATIONS {activations}: not a .npy array: {err}") from None
    try:
        networks = find_functional_networks(data, neurons, n_components, z_threshold, two_sided,
                                            random_state=seed, device=device)
    except ValueError as err:
        raise click.ClickException(f"ACTIVATIONS {activations}: {err}") from None
    path = networks.save(out_dir)
    click.echo(f"{len(networks)} networks, sizes {[len(n) for n in networks.networks]}; "
               f"union {len(networks.union())} of {networks.n_neurons} neurons")
    click.echo(f"wrote {path}")


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
