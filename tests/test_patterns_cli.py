"""``brainalign patterns atoms|networks`` write what the Python API returns."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from brainalign.cli import main
from brainalign.patterns import FunctionalNetworks, Patterns, fit_atoms
from brainalign.record.neurons import NeuronTable
from brainalign.timecourse import NeuronTimecourses


def test_atoms_command_matches_fit_atoms(tmp_path):
    rng = np.random.default_rng(0)
    neurons = NeuronTable.from_sites([(0, "mlp.out", 30), (1, "mlp.out", 30)])
    atoms = rng.standard_normal((80, 3))
    data = (atoms[:, rng.integers(3, size=60)] + 0.2 * rng.standard_normal((80, 60))).astype(np.float32)
    runs = np.repeat([0, 1], 40)
    NeuronTimecourses(data, np.arange(80) * 2.0, runs, neurons, {"story": "s"}).save(tmp_path / "tc")
    result = CliRunner().invoke(main, ["patterns", "atoms", str(tmp_path / "tc"), str(tmp_path / "out"),
                                       "--n-atoms", "3", "--train-runs", "0", "--held-out-runs", "1",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = Patterns.load(tmp_path / "out")
    direct = fit_atoms(data, 3, train_runs=[0], neurons=neurons, runs=runs, device="cpu")
    np.testing.assert_allclose(saved.atoms, direct.atoms, atol=1e-5)
    assert saved.fit_runs == [0] and saved.fit_stories == ["s"]
    bad = CliRunner().invoke(main, ["patterns", "atoms", str(tmp_path / "tc"), str(tmp_path / "x"),
                                    "--train-runs", "0,1", "--held-out-runs", "1", "--device", "cpu"])
    assert bad.exit_code == 1 and "held-out runs [1]" in bad.output  # one line, no traceback


def test_networks_command_writes_networks(tmp_path):
    rng = np.random.default_rng(1)
    neurons = NeuronTable.from_sites([(layer, "mlp.out", 50) for layer in range(4)])
    maps = np.zeros((3, 200))
    for i in range(3):
        maps[i, rng.choice(200, 15, replace=False)] = 2.0
    acts = (rng.laplace(size=(150, 3)) @ maps + 0.2 * rng.standard_normal((150, 200))).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    np.savez(tmp_path / "neurons.npz", layer=neurons.layer, site=neurons.site, unit=neurons.unit)
    result = CliRunner().invoke(main, ["patterns", "networks", str(tmp_path / "acts.npy"),
                                       str(tmp_path / "neurons.npz"), str(tmp_path / "nets"),
                                       "--n-components", "3", "--z-threshold", "2.5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    networks = FunctionalNetworks.load(tmp_path / "nets")
    assert len(networks) == 3 and networks.z_threshold == 2.5
    truth = {frozenset(np.flatnonzero(m)) for m in maps}
    assert {frozenset(n.tolist()) for n in networks.networks} == truth
