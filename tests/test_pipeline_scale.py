"""Scale-out on Dask: a LocalCluster of 2 worker processes gives the serial results exactly."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.pipeline.scale import map_units
from brainalign.pipeline.units import EncodingUnit, encode_unit


def subject_units(n_subjects=3, n_tr=120, n_features=4, n_targets=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_tr, n_features))
    runs = np.repeat([0, 1, 2], n_tr // 3)
    units = []
    for subject in range(n_subjects):
        weights = rng.normal(size=(n_features, n_targets)) * (subject + 1) / n_subjects
        Y = X @ weights + rng.normal(size=(n_tr, n_targets))
        units.append(EncodingUnit(f"sub-{subject:02d}", X, Y, runs,
                                  {"delays": [0, 1], "n_perm": 50, "random_state": 0,
                                   "backend": "numpy"}))
    return units


@pytest.mark.timeout(300)
def test_local_cluster_matches_serial_run():
    units = subject_units()
    serial = map_units(encode_unit, units, scheduler="serial")
    distributed = map_units(encode_unit, units, scheduler="local", n_workers=2)
    assert [r.provenance["unit"] for r in distributed] == ["sub-00", "sub-01", "sub-02"]
    for a, b in zip(serial, distributed):
        np.testing.assert_array_equal(a.r, b.r)
        np.testing.assert_array_equal(a.p_values, b.p_values)
        np.testing.assert_array_equal(a.alphas, b.alphas)
        np.testing.assert_array_equal(a.coef, b.coef)
    # The subjects differ (signal grows with the subject index), so equality is not trivial.
    assert serial[0].r.mean() < serial[2].r.mean()
    assert np.median(serial[2].r) > 0.5


@pytest.mark.timeout(300)
def test_units_that_read_their_subject_file(tmp_path):
    """A unit given a subject's .npz (bold, confounds, kept volumes) fits what
    fit_encoding fits on those arrays, saves the result where asked, and runs the same on
    a local Dask cluster: one subject in memory per unit."""
    from brainalign.encoding import fit_encoding, load

    units = subject_units(n_subjects=2)
    rng = np.random.default_rng(5)
    file_units, expected = [], []
    for unit in units:
        confounds = rng.normal(size=(len(unit.runs), 3))
        keep = rng.random(len(unit.runs)) > 0.1
        path = tmp_path / f"{unit.name}.npz"
        np.savez(path, bold=unit.Y.astype(np.float32), runs=unit.runs, confounds=confounds,
                 keep=keep)
        file_units.append(EncodingUnit(unit.name, unit.X, str(path), unit.runs, unit.options,
                                       out=str(tmp_path / "results" / unit.name)))
        expected.append(fit_encoding(unit.X, unit.Y.astype(np.float32), unit.runs,
                                     confounds=confounds, sample_mask=np.flatnonzero(keep),
                                     **unit.options))
    serial = map_units(encode_unit, file_units, scheduler="serial")
    assert serial == [str(tmp_path / "results" / u.name) for u in units]
    first = [load(path) for path in serial]
    distributed = map_units(encode_unit, file_units, scheduler="local", n_workers=2)
    for path, result, reference in zip(distributed, first, expected):
        again = load(path)
        np.testing.assert_array_equal(again.r, result.r)
        np.testing.assert_allclose(result.r, reference.r, atol=1e-12)
        np.testing.assert_allclose(result.p_values, reference.p_values)
        assert result.cv["scrubbed_volumes"] == reference.cv["scrubbed_volumes"] != []
        assert result.cv["cleaning"]["confounds"] == 3
