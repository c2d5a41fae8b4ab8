"""``brainalign record`` on a tiny model saved to disk, through click's CliRunner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from test_record import make_story, save_tiny_model

from brainalign.cli import main
from brainalign.cli.record import parse_layers
from brainalign.record import Recording, record_story
from brainalign.stimuli import bundled_story, write_table


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama checkpoint with its tokenizer, as ``save_pretrained`` writes them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    torch.set_num_threads(threads)


def test_record_two_stories_two_sites(tmp_path, model_dir):
    paths = []
    for n_words, name in ((30, "first"), (45, "second")):
        path = tmp_path / f"{name}.tsv"
        write_table(make_story(n_words, name, seed=n_words), path)
        paths.append(path)
    out = tmp_path / "out"
    args = ["record", "--model", str(model_dir), "--story", str(paths[0]), "--story",
            str(paths[1]), "--site", "mlp.inner", "--site", "resid", "--layers", "0,2",
            "--context-tokens", "12", "--pooling", "last", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "first: 160 neurons x 30 words" in result.output
    assert "second: 160 neurons x 45 words" in result.output
    assert str(out / "second") in result.output and "tokens/s" in result.output
    recording = Recording.open(out / "first", verify=True)
    assert recording.sites == ("mlp.inner", "resid") and recording.layers == (0, 2)
    assert recording.provenance["pooling"] == "last"
    assert recording.provenance["context"]["context_tokens"] == 12
    assert recording.story.texts == make_story(30, "first", seed=30).texts

    # the CLI records what the Python API records with the same settings
    from brainalign.models.registry import load_model

    api = record_story(load_model(str(model_dir)), recording.story, ["mlp.inner", "resid"],
                       tmp_path / "api", layers=[0, 2], context_tokens=12, pooling="last",
                       progress=False)
    np.testing.assert_array_equal(Recording.open(api).matrix(), recording.matrix())

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and again.output.count("already recorded") == 2


def test_default_story_is_the_bundled_one(tmp_path, model_dir):
    result = CliRunner().invoke(main, ["record", "--model", str(model_dir), "--site", "mlp.out",
                                       "--layers", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    story = bundled_story()
    recording = Recording.open(tmp_path / story.name)
    assert recording.story.texts == story.texts
    assert f"32 neurons x {len(story.words)} words" in result.output


def test_clear_errors(tmp_path, model_dir):
    result = CliRunner().invoke(main, ["record", "--model", str(model_dir), "--layers", "1-x",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0 and "expected layer numbers" in result.output
    result = CliRunner().invoke(main, ["record", "--model", str(model_dir), "--layers", "7",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0 and "out of range" in result.output
    result = CliRunner().invoke(main, ["record", "--model", str(model_dir), "--site", "mlp",
                                       "--out", str(tmp_path)])
    assert result.exit_code != 0 and "mlp.inner" in result.output
    # TR settings without --to-tr were ignored: a word recording was made
    for extra in (["--trim", "5,5"], ["--tr-method", "hrf"]):
        result = CliRunner().invoke(main, ["record", "--model", str(model_dir), *extra,
                                           "--out", str(tmp_path / "words")])
        assert result.exit_code == 2, result.output
        assert f"{extra[0]} set how TR time courses are made; they need --to-tr" in result.output
        assert not (tmp_path / "words").exists()


def test_parse_layers():
    assert parse_layers("0,5,10-12") == [0, 5, 10, 11, 12]
    assert parse_layers(None) is None and parse_layers("all") is None


def test_record_to_tr_with_a_scan_given_on_the_command_line(tmp_path, model_dir):
    from brainalign.models.registry import load_model
    from brainalign.stimuli import load_story
    from brainalign.timecourse import NeuronTimecourses, recording_to_tr

    path = tmp_path / "scanned.tsv"
    write_table(make_story(80, "scanned", seed=4), path)  # two runs of 40 words, 0.3 s each
    base = ["record", "--model", str(model_dir), "--story", str(path), "--site", "resid",
            "--context-tokens", "12", "--device", "cpu"]
    refused = CliRunner().invoke(main, base + ["--to-tr", "--out", str(tmp_path / "no")])
    assert refused.exit_code != 0 and "--scan-tr" in refused.output
    assert "Traceback" not in refused.output
    partial = CliRunner().invoke(main, base + ["--scan-tr", "2", "--out", str(tmp_path / "x")])
    assert partial.exit_code != 0 and "together" in partial.output

    scan = ["--scan-tr", "2", "--scan-volumes", "8,7", "--scan-first-volume", "-1,0"]
    out = tmp_path / "tr"
    result = CliRunner().invoke(main, base + scan + ["--to-tr", "--tr-method", "hrf",
                                                     "--trim", "1,0", "--dtype", "float16",
                                                     "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "scanned: 96 neurons x 13 TRs (80 words), float16" in result.output
    recorded = NeuronTimecourses.load(out / "scanned")
    assert recorded.data.dtype == np.float16 and recorded.provenance["method"] == "hrf"

    # the same as recording words with the API, then resampling them
    story = load_story(path).with_scan(2.0, [8, 7], first_volume_s=[-1.0, 0.0])
    words = record_story(load_model(str(model_dir)), story, ["resid"], tmp_path / "words",
                         context_tokens=12, progress=False)
    reference = recording_to_tr(Recording.open(words), "hrf", trim=(1, 0), device="cpu")
    np.testing.assert_allclose(recorded.data.astype(np.float64), reference.data, rtol=0,
                               atol=np.abs(reference.data).max() * 2.0 ** -10)
