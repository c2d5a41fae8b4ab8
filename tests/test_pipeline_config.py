"""Study configuration and the stage cache."""

from __future__ import annotations

import tomllib

import pytest

from brainalign.pipeline.cache import StageCache
from brainalign.pipeline.config import (ConfigError, example_toml, load_config, stage_config,
                                        validate)


def test_example_config_round_trips_to_defaults():
    config = validate(tomllib.loads(example_toml()))
    assert config == validate({})
    assert config["patterns"]["n_atoms"] == 64
    assert config["model"]["names"] == ["smollm2-135m"]


@pytest.mark.parametrize("raw, fragment", [
    ({"patterns": {"method": "pca"}}, "patterns.method = 'pca' is not allowed; allowed values: "
                                      "['dictionary', 'kmeans', 'ica']"),
    ({"model": {"sitez": ["mlp.out"]}}, "unknown key(s) ['model.sitez']"),
    ({"model": {"sites": ["mlp.middle"]}}, "model.sites contains ['mlp.middle']"),
    ({"encoding": {"delays": "1"}}, "encoding.delays must be of type list"),
    ({"patterns": {"n_atoms": True}}, "patterns.n_atoms must be of type integer"),
    ({"fmri": {"source": "nifti"}}, "fmri.paths is empty"),
    ({"networks": {"alpha": 1.5}}, "networks.alpha = 1.5 must lie in (0, 1)"),
    ({"surprise": {}}, "unknown table(s) ['surprise']"),
])
def test_invalid_configs_name_the_key_and_allowed_values(raw, fragment):
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert fragment in str(err.value)


def test_load_config_resolves_output_next_to_file(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text('[study]\nout = "results"\n[patterns]\nn_atoms = 8\n')
    config = load_config(path)
    assert config["study"]["out"] == str((tmp_path / "results").resolve())
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_changing_atoms_keeps_the_recording_key_and_changes_later_stages(tmp_path):
    cache = StageCache(tmp_path)
    base = validate({})
    changed = validate({"patterns": {"n_atoms": 16}})
    assert cache.key("record", base) == cache.key("record", changed)
    assert cache.key("timecourse", base) == cache.key("timecourse", changed)
    for stage in ("patterns", "encoding", "networks"):
        assert cache.key(stage, base) != cache.key(stage, changed)
    assert stage_config(base, "patterns")["patterns"]["n_atoms"] == 64


def test_stage_cache_publishes_only_complete_stages(tmp_path):
    cache = StageCache(tmp_path)
    config = validate({})
    with pytest.raises(RuntimeError):
        with cache.build("record", config) as folder:
            (folder / "part.npy").write_bytes(b"x")
            raise RuntimeError("killed midway")
    assert not cache.is_complete("record", config)
    assert not list((tmp_path / "cache").iterdir())
    with cache.build("record", config) as folder:
        (folder / "part.npy").write_bytes(b"x")
    assert cache.is_complete("record", config)
    assert (cache.path("record", config) / "part.npy").read_bytes() == b"x"
