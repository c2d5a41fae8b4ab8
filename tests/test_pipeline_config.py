"""Study configuration and the stage cache."""

from __future__ import annotations

import tomllib

import pytest

from brainalign.pipeline.cache import StageCache
from brainalign.pipeline.config import (SCAN_TABLE, STAGE_DEPENDENCIES, ConfigError, example_toml,
                                        load_config, stage_config, validate)


def test_example_config_round_trips_to_defaults():
    config = validate(tomllib.loads(example_toml()))
    assert config == validate({})
    assert config["patterns"]["n_atoms"] == 64
    assert config["model"]["names"] == ["smollm2-135m-instruct-q4"]


def test_one_delay_default_and_the_band_defaults():
    from brainalign.encoding.cleaning import DEFAULT_HIGH_PASS_HZ
    from brainalign.timecourse import DEFAULT_DELAYS

    config = validate({})
    assert tuple(config["encoding"]["delays"]) == DEFAULT_DELAYS
    assert config["encoding"]["bands"] == ["atoms", "word_rate"]
    assert config["cleaning"]["high_pass_hz"] == DEFAULT_HIGH_PASS_HZ


@pytest.mark.parametrize("raw, fragment", [
    ({"encoding": {"bands": ["word_rate"]}}, 'it must hold "atoms" once'),
    ({"encoding": {"bands": ["atoms", "mystery"]}}, "may add any of ['word_rate']"),
    ({"encoding": {"extra_bands": [{"name": "x"}]}}, "extra_bands[0].path must be a file path"),
    ({"encoding": {"extra_bands": [{"name": "word_rate", "path": "a.tsv"}]}},
     "'word_rate' is a built-in band"),
    ({"encoding": {"extra_bands": [{"name": "pub", "path": "a.tsv", "delays": [-1]}]}},
     "extra_bands[0].delays = [-1]"),
    ({"encoding": {"extra_bands": [{"name": "pub", "path": "a.tsv", "lag": 2}]}},
     "unknown key(s) ['lag']"),
    ({"cleaning": {"high_pass_hz": -1.0}}, "cleaning.high_pass_hz = -1.0 must be >= 0"),
])
def test_bad_bands_and_cleaning_name_the_key(raw, fragment):
    with pytest.raises(ConfigError) as error:
        validate(raw)
    assert fragment in str(error.value)


def test_extra_band_paths_resolve_next_to_the_config(tmp_path):
    (tmp_path / "study.toml").write_text(
        '[encoding]\nbands = ["atoms", "published"]\n'
        '[[encoding.extra_bands]]\nname = "published"\npath = "bands/published.tsv"\n'
        'hrf_convolved = true\n')
    config = load_config(tmp_path / "study.toml")
    band = config["encoding"]["extra_bands"][0]
    assert band["path"] == str(tmp_path / "bands" / "published.tsv") and band["hrf_convolved"]


def test_an_atlas_file_resolves_next_to_the_config_and_a_bundled_name_stays(tmp_path):
    (tmp_path / "atlas.nii.gz").write_bytes(b"")
    (tmp_path / "study.toml").write_text('[networks]\natlas = "atlas.nii.gz"\n')
    assert load_config(tmp_path / "study.toml")["networks"]["atlas"] == str(
        tmp_path / "atlas.nii.gz")
    (tmp_path / "named.toml").write_text('[networks]\natlas = "Yeo17"\n')
    assert load_config(tmp_path / "named.toml")["networks"]["atlas"] == "Yeo17"


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
    ({"stories": {"tr_s": 2000}}, "stories.tr_s = 2000 must lie in (0, 30.0] seconds"),
    ({"encoding": {"extra_bands": [{"name": "pitch_f0", "path": "a.tsv"},
                                   {"name": "pitchf0", "path": "b.tsv"}]}},
     "'pitchf0' and 'pitch_f0' name the same map files"),
    ({"encoding": {"extra_bands": [{"name": "word-rate", "path": "a.tsv"}]}},
     "'word-rate' and 'word_rate' name the same map files"),
    ({"cleaning": {"high_pass_hz": 128}}, "at or above the Nyquist frequency of a 2.0 s TR"),
    ({"timecourse": {"trim": [1.9, 0]}}, "timecourse.trim = [1.9, 0]; allowed: two integers"),
    ({"timecourse": {"trim": [True, False]}}, "timecourse.trim = [True, False]"),
    ({"timecourse": {"trim": [2]}}, "timecourse.trim = [2]; allowed"),
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
    # a run killed outright (no exception handler ran) leaves its build folder: the next
    # build of that stage removes it, and leaves one of a process still running
    final = cache.path("timecourse", config)
    dead = final.with_name(f".{final.name}.partial-999999999")
    alive = final.with_name(f".{final.name}.partial-1")  # init: always running
    for folder in (dead, alive):
        folder.mkdir()
    with cache.build("timecourse", config) as folder:
        (folder / "part.npy").write_bytes(b"y")
    assert not dead.exists() and alive.exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [alive.name, cache.path("record", config).name, final.name])


@pytest.mark.parametrize("fmri, fragment", [
    ({"source": "roi", "paths": ["a.tsv"]},
     "fmri.source = 'roi' needs the time of each run's first volume on the words' clock: set "
     "fmri.first_volume_s = [...] (seconds, one per run) or fmri.discarded_volumes = [...]"),
    ({"first_volume_s": [20.0], "discarded_volumes": [10]},
     "fmri.first_volume_s = [20.0] and fmri.discarded_volumes = [10] both given"),
    ({"discarded_volumes": [-1]}, "fmri.discarded_volumes = [-1]; allowed: a list of integers >= 0"),
    ({"first_volume_s": ["20"]}, "fmri.first_volume_s = ['20']; allowed: a list of numbers"),
])
def test_first_volume_keys_are_checked_and_required_for_real_data(fmri, fragment):
    with pytest.raises(ConfigError) as err:
        validate({"fmri": fmri})
    assert fragment in str(err.value)
    if fmri.get("source") == "roi":
        assert validate({"fmri": {**fmri, "discarded_volumes": [10]}})["fmri"][
            "discarded_volumes"] == [10]


def test_networks_atlas_none_needs_the_report_off():
    with pytest.raises(ConfigError, match='networks.atlas = "none" skips the network mapping.*'
                       "outputs.report = false"):
        validate({"networks": {"atlas": "none"}})
    config = validate({"networks": {"atlas": "none"}, "outputs": {"report": False}})
    assert config["networks"]["atlas"] == "none"
    assert "first_volume_s = []" in example_toml() and '"none": skip' in example_toml()


def test_load_config_expands_variables_and_resolves_paths_next_to_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "study.toml"
    path.write_text('[stories]\nbundled = false\n'
                    'paths = ["${ALICE_ROOT:-../data}/story.TextGrid"]\n'
                    '[fmri]\nsource = "roi"\ndiscarded_volumes = [10]\n'
                    'paths = [["runs/r1.txt", "/abs/r2.txt"], "${ALICE_ROOT:-../data}/s2.txt"]\n')
    monkeypatch.delenv("ALICE_ROOT", raising=False)
    config = load_config(path)
    assert config["stories"]["paths"] == [str(tmp_path / "data" / "story.TextGrid")]
    assert config["fmri"]["paths"] == [[str(folder / "runs" / "r1.txt"), "/abs/r2.txt"],
                                       str(tmp_path / "data" / "s2.txt")]
    monkeypatch.setenv("ALICE_ROOT", "/elsewhere")
    assert load_config(path)["stories"]["paths"] == ["/elsewhere/story.TextGrid"]
    path.write_text('[stories]\npaths = ["${ALICE_UNSET_ROOT}/story.TextGrid"]\n')
    with pytest.raises(ConfigError, match=r"stories.paths = '\$\{ALICE_UNSET_ROOT\}/story."
                       r"TextGrid' uses \$\{ALICE_UNSET_ROOT\}, which is not set"):
        load_config(path)


def test_stages_on_the_tr_grid_are_keyed_on_the_resolved_scans(tmp_path):
    cache = StageCache(tmp_path)
    base = {**validate({}), SCAN_TABLE: {"s": {"tr_s": 2.0, "n_volumes": [362],
                                               "first_volume_s": [20.0]}}}
    shifted = {**base, SCAN_TABLE: {"s": {"tr_s": 2.0, "n_volumes": [362],
                                          "first_volume_s": [0.0]}}}
    assert cache.key("record", base) == cache.key("record", shifted)
    for stage in ("timecourse", "patterns", "fmri", "encoding", "networks"):
        assert cache.key(stage, base) != cache.key(stage, shifted), stage


def test_resampling_kernel_revision_is_in_the_cache_key_of_every_stage_that_resamples(monkeypatch):
    """A code fix to the word -> TR kernels must rebuild cached stages, not reuse them."""
    import brainalign.timecourse.resample as resample

    config = validate({})
    before = {stage: StageCache("/tmp/out").key(stage, config) for stage in STAGE_DEPENDENCIES}
    monkeypatch.setattr(resample, "KERNEL_REVISION", resample.KERNEL_REVISION + 1)
    after = {stage: StageCache("/tmp/out").key(stage, config) for stage in STAGE_DEPENDENCIES}
    changed = {stage for stage in before if before[stage] != after[stage]}
    assert changed == {stage for stage, tables in STAGE_DEPENDENCIES.items()
                       if any(t.partition(".")[0] == "timecourse" for t in tables)}
    assert {"timecourse", "patterns", "encoding", "corpus"} <= changed
    assert "record" not in changed and "interventions" not in changed
