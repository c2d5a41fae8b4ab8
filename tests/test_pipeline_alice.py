"""analysis/configs/alice_rois.toml: the real Alice ROI tables through ``brainalign run``.

Skips cleanly when the Brennan 2016 data (../shared/data or $BRAINALIGN_SHARED_DATA) or the
SmolLM2 model package are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO, SHARED_DATA, shared_data

from brainalign.cli import main
from brainalign.pipeline.config import load_config

CONFIG = REPO / "analysis" / "configs" / "alice_rois.toml"

pytestmark = pytest.mark.usefixtures("single_thread")


def test_example_paths_resolve_to_the_shared_data_beside_the_checkout(monkeypatch):
    shared_data("alice_brennan2016")
    monkeypatch.delenv("BRAINALIGN_SHARED_DATA", raising=False)
    config = load_config(CONFIG)
    if not Path(config["stories"]["paths"][0]).is_file():
        pytest.skip("the shared data are not beside this checkout (only via the variable)")
    assert all(Path(p).is_file() for p in config["fmri"]["paths"])
    assert config["fmri"]["discarded_volumes"] == [10] and config["networks"]["atlas"] == "none"


def test_alice_rois_config_runs_end_to_end(tmp_path, monkeypatch):
    from brainalign.models.registry import is_installed
    from brainalign.timecourse import NeuronTimecourses

    shared_data("alice_brennan2016")
    if not is_installed("smollm2-135m"):
        pytest.skip("model smollm2-135m not installed (make install)")
    monkeypatch.setenv("BRAINALIGN_SHARED_DATA", str(SHARED_DATA))
    text = CONFIG.read_text()
    assert 'out = "../../brainalign-alice-rois"' in text
    config_path = tmp_path / "alice_rois.toml"
    config_path.write_text(text.replace('out = "../../brainalign-alice-rois"', 'out = "out"'))

    result = CliRunner().invoke(main, ["run", str(config_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {stage["stage"]: stage["status"] for stage in summary["stages"]}
    assert status["networks"] == "skipped" and status["interventions"] == "skipped"
    assert all(status[s] == "computed" for s in ("record", "timecourse", "patterns", "fmri",
                                                 "encoding"))
    # the stories' scan came from the data: 362 volumes counted in the first table, the
    # first kept volume at 10 discarded x 2 s
    scan = summary["provenance"]["config"]["scan"]
    assert list(scan.values()) == [{"tr_s": 2.0, "n_volumes": [362], "first_volume_s": [20.0]}]
    assert summary["sizes"]["n_tr"] == 362 and summary["sizes"]["spaces"] == {"data": 6}
    stage_dirs = {stage["stage"]: Path(stage["path"]) for stage in summary["stages"]}
    timecourses = NeuronTimecourses.load(stage_dirs["timecourse"] / "smollm2-135m")
    assert timecourses.provenance["first_volume_s"] == [20.0]
    np.testing.assert_allclose(timecourses.times_s[[0, -1]], [20.0, 20.0 + 2 * 361])
    brain = json.loads((stage_dirs["fmri"] / "smollm2-135m" / "data" / "brain.json").read_text())
    assert brain["first_volume_s"] == [20.0] and brain["n_volumes"] == [362]
    r = np.loadtxt(summary["maps"]["smollm2-135m/data"]["r"], skiprows=1)
    assert r.shape == (6,) and np.all(np.isfinite(r))
    assert r.max() > 0.1, f"no ROI is predicted by the atoms: {r}"
    assert any('networks.atlas = "none"' in note for note in summary["notes"])
