"""``brainalign lesion`` on a tiny model saved to disk."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_record import VOCABULARY, tiny_loaded

from brainalign.cli import main
from brainalign.interventions import NeuronSet, scale
from brainalign.interventions.evaluation import score_text


def saved_inputs(tmp_path, family: str, neuron_set: NeuronSet):
    """A tiny model saved to disk, a text and the neuron set's JSON: the lesion command's
    inputs. Returns the loaded model and the three paths."""
    loaded = tiny_loaded(family, seed=2)
    model_dir = tmp_path / "model"
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    text_path = tmp_path / "text.txt"
    text_path.write_text(" ".join(VOCABULARY[i % len(VOCABULARY)] for i in range(0, 300, 7)))
    neurons_path = tmp_path / "neurons.json"
    neurons_path.write_text(json.dumps(neuron_set.to_dict()))
    return loaded, model_dir, text_path, neurons_path


def test_lesion_command_reports_the_python_api_ratio(tmp_path):
    neuron_set = NeuronSet({"L01.mlp.out": list(range(32)), "L02.mlp.out": list(range(32))}, name="test")
    loaded, model_dir, text_path, neurons_path = saved_inputs(tmp_path, "llama", neuron_set)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(main, ["lesion", "--model", str(model_dir), "--neurons", str(neurons_path),
                                       "--text", str(text_path), "--window", "16", "--mode", "scale", "--value", "50",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "64 neurons, scale 50" in result.output
    document = json.loads(out.read_text())
    text = text_path.read_text()
    intact = score_text(loaded.model, loaded.tokenizer, text, max_tokens=1024, window=16)
    with scale(loaded.model, neuron_set, 50.0):
        edited = score_text(loaded.model, loaded.tokenizer, text, max_tokens=1024, window=16)
    assert document["intact"]["perplexity"] == pytest.approx(intact.perplexity, rel=1e-5)
    assert document["ppl_ratio"] == pytest.approx(edited.perplexity / intact.perplexity, rel=1e-5)
    assert abs(document["ppl_ratio"] - 1.0) > 1e-3  # random tiny model: near-uniform predictions
    bad = CliRunner().invoke(main, ["lesion", "--model", str(model_dir), "--neurons", str(neurons_path)])
    assert bad.exit_code != 0 and "exactly one of --text" in bad.output
    # scale / add need their value (a default 0 made scale a lesion and add a no-op)
    common = ["lesion", "--model", str(model_dir), "--neurons", str(neurons_path), "--text",
              str(text_path)]
    bad = CliRunner().invoke(main, common + ["--mode", "add"])
    assert bad.exit_code != 0 and "--mode add takes --value" in bad.output
    bad = CliRunner().invoke(main, common + ["--mode", "zero", "--value", "2"])
    assert bad.exit_code != 0 and "not zero" in bad.output


def test_lesion_command_edits_the_sites_of_a_declared_layout(tmp_path):
    """--layout: Gemma-3's mlp.out declared before its sandwich norm; the scores equal the
    Python API's with that layout on the model, not with the automatic site."""
    from brainalign.interventions import lesion
    from brainalign.models.sites import load_layout

    neuron_set = NeuronSet({"L00.mlp.out": list(range(16))}, name="test")
    loaded, model_dir, text_path, neurons_path = saved_inputs(tmp_path, "gemma3", neuron_set)
    layout = {"mlp.out": ["mlp", "output"], "resid": ["", "output"]}
    layout_path = tmp_path / "layout.json"
    layout_path.write_text(json.dumps(layout))
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(main, ["lesion", "--model", str(model_dir), "--neurons",
                                       str(neurons_path), "--text", str(text_path), "--window",
                                       "16", "--layout", str(layout_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = text_path.read_text()

    def lesioned_perplexity():
        with lesion(loaded.model, neuron_set):
            return score_text(loaded.model, loaded.tokenizer, text, max_tokens=1024,
                              window=16).perplexity

    automatic = lesioned_perplexity()
    loaded.layout = load_layout(layout)
    declared = lesioned_perplexity()
    assert abs(declared / automatic - 1) > 1e-4  # the two sites differ
    edited = json.loads(out.read_text())["edited"]["perplexity"]
    assert edited == pytest.approx(declared, rel=1e-5)
