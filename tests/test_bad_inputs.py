"""Bad inputs, table-driven: each gives a one-line error naming what was given and what is
allowed, a non-zero exit code on the command line, and leaves no output behind.

Each CLI row is (id, argument builder, expected substrings, exit code, output path or None);
each API row is (id, callable, exception type, expected substrings). Tiny models and data
only (a 3-layer Llama saved to disk, a few random arrays).
"""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_record import VOCABULARY, save_tiny_model, tiny_loaded

from brainalign.cli import main

CUDA_99 = "cuda:99"  # refused with CUDA (no such index) and without it (no CUDA)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny Llama on disk, a text, and the inputs the rows point at."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bad-inputs")
    model_dir = save_tiny_model(root / "model", seed=1)
    (root / "text.txt").write_text(" ".join(VOCABULARY[i % len(VOCABULARY)] for i in range(40)))
    neuron_files = {
        "unpadded_unit_too_big": {"units": {"L0.mlp.out": [99999]}},
        "layer_missing": {"units": {"L07.mlp.out": [1]}},
        "bad_site": {"units": {"L01.mlp.foo": [1]}},
        "negative_unit": {"units": {"L01.mlp.out": [-1]}},
        "string_unit": {"units": {"L01.mlp.out": ["a"]}},
        "not_object": [1, 2, 3],
        "no_units": {"name": "x"},
        "empty": {"units": {}},
        "good": {"units": {"L01.mlp.out": [1, 2]}},
    }
    for name, document in neuron_files.items():
        (root / f"{name}.json").write_text(json.dumps(document))
    (root / "broken.json").write_text('{"units": {"L01.mlp.out": [1, 2]')
    (root / "a_file").write_text("not a folder")
    recording = root / "recording"  # a word-level recording: manifest, no TR-grid data
    recording.mkdir()
    (recording / "manifest.json").write_text("{}")
    (root / "empty_dir").mkdir()
    np.save(root / "act_1d.npy", np.arange(20, dtype=np.float32))
    nan = np.random.default_rng(0).standard_normal((30, 6)).astype(np.float32)
    nan[3, 2] = np.nan
    np.save(root / "act_nan.npy", nan)
    np.savez(root / "neurons.npz", layer=np.zeros(6, np.int32), site=np.array(["mlp.out"] * 6),
             unit=np.arange(6, dtype=np.int32))
    yield root
    torch.set_num_threads(threads)


def _lesion(neurons, *extra):
    return lambda f: ["lesion", "--model", str(f / "model"), "--neurons", str(f / neurons),
                      "--text", str(f / "text.txt"), "--window", "8", "--max-tokens", "32",
                      "--out", str(f / "scores.json"), *extra]


def _lesion_out(out):
    return lambda f: ["lesion", "--model", str(f / "model"), "--neurons", str(f / "good.json"),
                      "--text", str(f / "text.txt"), "--out", str(f / out)]


def _record(*extra, out="rec"):
    return lambda f: ["record", "--model", str(f / "model"), "--site", "mlp.out",
                      "--out", str(f / out), *extra]


def _study(f, name: str, text: str) -> list[str]:
    path = f / f"{name}.toml"
    path.write_text(text.replace("MODEL", str(f / "model")))
    return ["run", str(path), "--no-progress"]


def _run(name, text):
    return lambda f: _study(f, name, text)


CLI_ROWS = [
    # --- brainalign lesion: the neuron JSON
    ("lesion-unpadded-key-unit-beyond-width", _lesion("unpadded_unit_too_big.json"),
     ["unpadded_unit_too_big.json", "L00.mlp.out has 32 units", "99999"], 1, "scores.json"),
    ("lesion-layer-missing", _lesion("layer_missing.json"),
     ["layer_missing.json", "L07.mlp.out", "out of range", "3 layers"], 1, "scores.json"),
    ("lesion-unknown-site", _lesion("bad_site.json"), ["bad_site.json", "bad site key", "mlp.foo"],
     1, "scores.json"),
    ("lesion-negative-unit", _lesion("negative_unit.json"), ["negative unit index -1"], 1, "scores.json"),
    ("lesion-string-unit", _lesion("string_unit.json"), ["string_unit.json", "integer unit"], 1,
     "scores.json"),
    ("lesion-json-not-object", _lesion("not_object.json"), ["not_object.json", "JSON object"], 1,
     "scores.json"),
    ("lesion-json-no-units", _lesion("no_units.json"), ["no_units.json", '"units"'], 1, "scores.json"),
    ("lesion-empty-set", _lesion("empty.json"), ["empty.json", "empty"], 1, "scores.json"),
    ("lesion-broken-json", _lesion("broken.json"), ["broken.json", "not valid JSON"], 1, "scores.json"),
    # --- devices and output paths
    ("lesion-device-not-torch", _lesion("good.json", "--device", "gpu"),
     ["--device", "'gpu' is not a torch device", "allowed: cpu, cuda"], 2, "scores.json"),
    ("lesion-device-cuda-absent", _lesion("good.json", "--device", CUDA_99), [CUDA_99], 2, "scores.json"),
    ("lesion-out-folder-missing", _lesion_out("missing/scores.json"), ["does not exist"], 2,
     "missing"),
    ("lesion-out-under-a-file", _lesion_out("a_file/scores.json"), ["is a file, not a folder"], 2,
     None),
    ("record-device-not-torch", _record("--device", "gpu"), ["'gpu' is not a torch device"], 2,
     "rec"),
    ("record-device-cuda-absent", _record("--device", CUDA_99), [CUDA_99], 2, "rec"),
    *([("record-device-cuda-on-a-cpu-build", _record("--device", "cuda"),
        ["'cuda'", "no CUDA device", "use cpu"], 2, "rec")] if not torch.cuda.is_available() else []),
    ("record-out-under-a-file", _record(out="a_file/rec"), ["a_file", "is not a folder"], 2,
     None),
    # --- brainalign record --layers
    ("record-layers-reversed", _record("--layers", "5-2"),
     ["--layers", "'5-2'", "reversed", "'2-5'"], 2, "rec"),
    ("record-layers-not-numbers", _record("--layers", "a-b"), ["layer numbers like"], 2, "rec"),
    ("record-layers-beyond-model", _record("--layers", "0,9", "--device", "cpu"),
     ["layer(s) [9] out of range", "3 layers"], 1, "rec"),
    # --- brainalign patterns
    ("atoms-on-a-recording", lambda f: ["patterns", "atoms", str(f / "recording"), str(f / "atoms"),
                                        "--train-runs", "all"],
     ["recording", "word-level recording", "--to-tr"], 1, "atoms"),
    ("atoms-on-an-empty-folder", lambda f: ["patterns", "atoms", str(f / "empty_dir"),
                                            str(f / "atoms"), "--train-runs", "all"],
     ["not a saved NeuronTimecourses"], 1, "atoms"),
    ("atoms-device-not-torch", lambda f: ["patterns", "atoms", str(f / "empty_dir"), str(f / "atoms"),
                                          "--train-runs", "all", "--device", "tpu9"],
     ["'tpu9'"], 2, "atoms"),
    ("networks-1d-activations", lambda f: ["patterns", "networks", str(f / "act_1d.npy"),
                                           str(f / "neurons.npz"), str(f / "nets")],
     ["act_1d.npy", "activations must be (n_tokens", "(20,)"], 1, "nets"),
    ("networks-nan-activations", lambda f: ["patterns", "networks", str(f / "act_nan.npy"),
                                            str(f / "neurons.npz"), str(f / "nets")],
     ["act_nan.npy", "NaN", "token row 3"], 1, "nets"),
    # --- brainalign run: a study configuration, every error at once
    ("study-several-errors-at-once", _run("several", """
[study]
out = "study-out"
[model]
names = ["MODEL"]
layers = [0, 99]
[stories]
paths = ["no/such/story.TextGrid"]
[networks]
atlas = "yeo8"
"""), ["3 errors", "layer(s) [99] out of range", "3 layers", "networks.atlas = 'yeo8'",
       "stories.paths: no such file", "story.TextGrid"], 1, "study-out"),
    ("study-schema-errors-at-once", _run("schema", """
[study]
out = "study-out"
seed = "one"
[patterns]
method = "pca"
colour = 1
"""), ["3 errors", "study.seed must be of type integer", "patterns.method = 'pca'",
       "patterns.colour"], 1, "study-out"),
    ("study-negative-delay", _run("delays", """
[study]
out = "study-out"
[encoding]
delays = [-2, 1]
"""), ["encoding.delays = [-2, 1]: FIR delays must be whole numbers of TRs >= 0"], 1,
     "study-out"),
    ("study-bad-toml", _run("toml", "[study\nout = 1"), ["not valid TOML"], 1, "study-out"),
    ("study-bad-device", _run("device", """
[study]
out = "study-out"
[model]
names = ["MODEL"]
device = "gpu"
"""), ["model.device 'gpu' is not a torch device"], 1, "study-out"),
    ("study-out-under-a-file", _run("out", """
[study]
out = "a_file/study-out"
[model]
names = ["MODEL"]
"""), ["study.out", "a_file"], 1, None),
    ("study-missing-model", _run("model", """
[study]
out = "study-out"
[model]
names = ["./no/such/model"]
"""), ["model.names[0]", "no/such/model"], 1, "study-out"),
]


@pytest.mark.parametrize("row", CLI_ROWS, ids=[row[0] for row in CLI_ROWS])
def test_cli_bad_input(row, files):
    _, build, expected, exit_code, out = row
    result = CliRunner().invoke(main, build(files))
    output = result.output.strip()
    assert result.exit_code == exit_code, output
    assert "Traceback" not in output and not isinstance(result.exception, (ValueError, TypeError,
                                                                            RuntimeError, OSError))
    message = output.splitlines()[-1]
    for part in expected:
        assert part in output, (part, output)
    assert message.startswith("Error:"), output
    if out is not None:
        assert not (files / out).exists(), f"{out} left behind"


# ------------------------------------------------------------------------------- Python API
def _fit(**options):
    from brainalign.encoding.fit import fit_encoding

    rng = np.random.default_rng(0)
    options = {"n_perm": 0, "partition": False, **options}
    return lambda: fit_encoding(rng.standard_normal((40, 3)), rng.standard_normal((40, 2)),
                                **options)


def _validate(raw):
    from brainalign.pipeline.config import validate

    return lambda: validate(raw)


def _volume(shape=(6, 7, 5, 8), affine=None, mask_shape=(6, 7, 5), mask_affine=None,
            name="bold.nii.gz", tmp=None):
    def call():
        from brainalign.brain import VolumeMasker

        rng = np.random.default_rng(1)
        img = nib.Nifti1Image(rng.standard_normal(shape).astype(np.float32),
                              np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine)
        path = tmp / name
        nib.save(img, path)
        mask = np.zeros(mask_shape, np.uint8)
        mask[1:4, 1:4, 1:4] = 1
        mask_img = nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0]) if mask_affine is None
                                   else mask_affine)
        return VolumeMasker(mask_img=mask_img).fit().transform(str(path))
    return call


def _volume_no_mask(tmp):
    def call():
        from brainalign.brain import VolumeMasker

        path = tmp / "single.nii.gz"
        nib.save(nib.Nifti1Image(np.ones((6, 7, 5), np.float32), np.eye(4)), path)
        return VolumeMasker().fit(str(path))
    return call


def _edit(units):
    def call():
        from brainalign.interventions import NeuronSet, lesion

        loaded = tiny_loaded("llama")
        with lesion(loaded.model, NeuronSet(units)):
            pass
    return call


def _timecourses(folder_name):
    def call(tmp):
        from brainalign.timecourse import NeuronTimecourses

        folder = tmp / folder_name
        folder.mkdir(exist_ok=True)
        if folder_name == "recording":
            (folder / "manifest.json").write_text("{}")
        return NeuronTimecourses.load(folder)
    return call


def _networks(activations):
    def call():
        from brainalign.patterns import find_functional_networks
        from brainalign.record.neurons import NeuronTable

        neurons = NeuronTable(np.zeros(6, np.int32), np.array(["mlp.out"] * 6),
                              np.arange(6, dtype=np.int32))
        return find_functional_networks(activations, neurons, 2)
    return call


_NAN = np.ones((20, 6))
_NAN[4, 1] = np.nan

API_ROWS = [
    ("fit-negative-delay", lambda tmp: _fit(delays=[-1, 2])(), ValueError,
     ["delays = [-1, 2]: FIR delays must be whole numbers of TRs >= 0"]),
    ("fit-fractional-delay", lambda tmp: _fit(delays=[1.5])(), ValueError, ["[1.5]", ">= 0"]),
    ("fit-repeated-delay", lambda tmp: _fit(delays=[1, 1])(), ValueError, ["delays repeat"]),
    ("fit-string-delay", lambda tmp: _fit(delays="12")(), ValueError, ["delays = '12'"]),
    ("fit-negative-n-perm", lambda tmp: _fit(n_perm=-5)(), ValueError,
     ["n_perm must be an integer >= 0, got -5"]),
    ("fit-bool-n-perm", lambda tmp: _fit(n_perm=True)(), ValueError, ["n_perm must be an integer"]),
    ("config-negative-delay-same-text", lambda tmp: _validate({"encoding": {"delays": [-1, 2]}})(),
     ValueError, ["encoding.delays = [-1, 2]: FIR delays must be whole numbers of TRs >= 0"]),
    ("config-empty-delays", lambda tmp: _validate({"encoding": {"delays": []}})(), ValueError,
     ["encoding.delays = []", "non-empty"]),
    ("config-several-errors", lambda tmp: _validate({"patterns": {"n_atoms": 1},
                                                     "fmri": {"spaces": ["mars"]},
                                                     "model": {"layers": [-1]}})(),
     ValueError, ["4 errors", "patterns.n_atoms = 1", "fmri.n_planted", "mars", "model.layers = [-1]"]),
    ("volume-3d-image", lambda tmp: _volume(shape=(6, 7, 5), name="one_volume.nii.gz", tmp=tmp)(),
     ValueError, ["one_volume.nii.gz", "shape (6, 7, 5)", "3-D", "4-D"]),
    ("volume-3d-image-no-mask", lambda tmp: _volume_no_mask(tmp)(), ValueError,
     ["single.nii.gz", "(6, 7, 5)", "4-D"]),
    ("volume-mask-other-shape", lambda tmp: _volume(mask_shape=(7, 7, 5), tmp=tmp)(), ValueError,
     ["bold.nii.gz", "shape (6, 7, 5)", "shape (7, 7, 5)", "resample_to_mask=True"]),
    ("volume-mask-other-affine", lambda tmp: _volume(mask_affine=np.diag([3.0, 3.0, 3.0, 1.0]),
                                                     tmp=tmp)(),
     ValueError, ["differs from the mask's", "[2.0, 2.0, 2.0]", "[3.0, 3.0, 3.0]"]),
    ("neurons-unit-beyond-width", lambda tmp: _edit({"L0.mlp.out": [99999]})(), ValueError,
     ["L00.mlp.out has 32 units", "99999"]),
    ("neurons-layer-missing", lambda tmp: _edit({"L05.mlp.out": [1]})(), ValueError,
     ["L05.mlp.out", "out of range"]),
    ("neurons-fractional-unit", lambda tmp: _edit({"L01.mlp.out": [1.5]})(), ValueError,
     ["unit indices must be integers"]),
    ("timecourses-from-recording", lambda tmp: _timecourses("recording")(tmp), ValueError,
     ["word-level recording"]),
    ("scan-shorter-than-words", lambda tmp: _scan(n_volumes=[10, 10]), ValueError,
     ["602 of 631 word(s) outside the scan", "scan 0.000 .. 20.000 s", "first_volume_s"]),
    ("scan-negative-volumes", lambda tmp: _scan(n_volumes=[132, -1]), ValueError,
     ["n_volumes must be whole numbers >= 1", "[132, -1]"]),
    ("scan-fractional-volumes", lambda tmp: _scan(n_volumes=[132.5, 147]), ValueError,
     ["n_volumes must be whole numbers >= 1", "132.5"]),
    ("scan-text-volumes", lambda tmp: _scan(n_volumes=["a", 147]), ValueError,
     ["n_volumes must be whole numbers >= 1", "'a'"]),
    ("scan-volumes-per-run", lambda tmp: _scan(n_volumes=[279]), ValueError,
     ["n_volumes has 1 entries but the words span 2 run(s)"]),
    ("scan-zero-tr", lambda tmp: _scan(tr_s=0.0), ValueError, ["tr_s must be > 0, got 0.0"]),
    ("networks-1d", lambda tmp: _networks(np.ones(6))(), ValueError, ["activations must be"]),
    ("networks-nan", lambda tmp: _networks(_NAN)(), ValueError, ["NaN", "token row 4"]),
    ("load-model-bad-device", lambda tmp: __import__("brainalign.models.registry", fromlist=["x"])
     .load_model("any", device="gpu"), ValueError, ["device 'gpu' is not a torch device"]),
]


def _scan(**changes):
    """The bundled story (2 runs, 631 + 697 words) with a scan attached."""
    from brainalign.stimuli import bundled_story

    scan = {"tr_s": 2.0, "n_volumes": [132, 147], "first_volume_s": 0.0, **changes}
    return bundled_story().with_scan(scan.pop("tr_s"), scan.pop("n_volumes"), **scan)


@pytest.mark.parametrize("row", API_ROWS, ids=[row[0] for row in API_ROWS])
def test_api_bad_input(row, tmp_path):
    _, call, error, expected = row
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    assert "\n" not in message, message
    for part in expected:
        assert part in message, (part, message)


# ------------------------------------------------------------------------ what is accepted
def test_unpadded_site_keys_name_the_padded_site():
    from brainalign.interventions import NeuronSet

    merged = NeuronSet({"L1.mlp.out": [3], "L01.mlp.out": [1, 3]})
    assert list(merged.units) == ["L01.mlp.out"] and merged.units["L01.mlp.out"].tolist() == [1, 3]


def test_unpadded_key_edits_its_site():
    from brainalign.interventions import NeuronSet, lesion
    from brainalign.models.sites import resolve_sites, site_hooks

    loaded = tiny_loaded("llama")
    site = resolve_sites(loaded.model, ["mlp.out"], [0])[0]
    seen = {}
    ids = torch.tensor([[1, 2, 3, 4]])
    with lesion(loaded.model, NeuronSet({"L0.mlp.out": [5]})):
        with site_hooks(loaded.model, [site], lambda s, t: seen.setdefault("v", t.clone())):
            loaded.model(input_ids=ids)
    assert torch.all(seen["v"][..., 5] == 0) and torch.any(seen["v"][..., 4] != 0)


def test_volume_resampling_is_opt_in_and_logged(tmp_path, caplog):
    from brainalign.brain import VolumeMasker

    rng = np.random.default_rng(2)
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(rng.standard_normal((6, 7, 5, 4)).astype(np.float32),
                             np.diag([2.0, 2.0, 2.0, 1.0])), path)
    mask = np.zeros((4, 5, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask_img = nib.Nifti1Image(mask, np.diag([3.0, 3.0, 3.0, 1.0]))
    with caplog.at_level(logging.WARNING, logger="brainalign"):
        signals = VolumeMasker(mask_img=mask_img, resample_to_mask=True).fit().transform(str(path))
    assert signals.shape == (4, 8)
    warning = [r.getMessage() for r in caplog.records if r.name.startswith("brainalign")]
    assert warning and "bold.nii.gz" in warning[0] and "resampling" in warning[0]
    assert "shape (6, 7, 5)" in warning[0] and "shape (4, 5, 4)" in warning[0]


def test_the_table_is_large_enough():
    assert len(CLI_ROWS) + len(API_ROWS) >= 40
