"""Study-B lesion check of a study: do the model's functional networks matter for reading?

Functional networks (FNs) are found with ICA on the word-by-neuron activations the record
stage wrote for the first run of a story
(:func:`brainalign.patterns.find_functional_networks`); the union of all FNs is then
lesioned (set to zero at every position, :func:`brainalign.interventions.lesion`) while
the model reads held-out text (the story's other runs), and the rise in perplexity is
compared with lesions of random neuron sets matched in count and in layer distribution
(:func:`brainalign.interventions.layer_matched`). Perplexity comes from
:func:`brainalign.interventions.score_text` (sliding windows).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def heldout_text(story: Any, fit_run: int = 0) -> str:
    """The words of every run of ``story`` except ``fit_run``, joined by spaces."""
    words = [w.text for w in story.words if w.run != fit_run]
    if not words:
        raise ValueError(f"story {story.name!r} has a single run: no held-out text for the "
                         "lesion check")
    return " ".join(words)


def lesion_check(model_name: str, recording: Any, story: Any, options: dict, *,
                 device: str = "cpu", seed: int = 0, max_tokens: int = 512,
                 progress: bool = False) -> dict[str, Any]:
    """Lesion the union of the model's functional networks and matched random sets.

    Parameters
    ----------
    model_name : str
        Registry name or path of the recorded model.
    recording : Recording
        The story's recording (``matrix()`` -> (n_words, n_neurons), ``neurons``).
    story : Story
        Words of run 0 find the FNs; the other runs are the held-out text.
    options : dict
        The ``[interventions]`` table: ``n_components``, ``z_threshold``, ``n_controls``.
    device : str
    seed : int
        Seed of the ICA and of the control draws.
    max_tokens : int
        Held-out tokens scored.
    progress : bool

    Returns
    -------
    dict
        ``baseline``, ``lesion`` and ``controls`` (perplexity, mean NLL, top-1 accuracy),
        network sizes and layers, ``ratio`` (lesion / median control perplexity increase)
        and a one-line ``verdict``.
    """
    import torch

    from brainalign.interventions import (NeuronSet, layer_matched, lesion, score_text,
                                          universe_table)
    from brainalign.models.registry import load_model
    from brainalign.patterns import find_functional_networks

    words_run = np.array([w.run for w in story.words])
    activations = np.asarray(recording.matrix(), dtype=np.float32)[words_run == 0]
    neurons = recording.neurons
    networks = find_functional_networks(activations, neurons,
                                        n_components=options["n_components"],
                                        z_threshold=options["z_threshold"], random_state=seed)
    members = [np.asarray(index, dtype=np.int64) for index in networks.networks]
    union_index = np.unique(np.concatenate(members)) if members else np.zeros(0, np.int64)
    result: dict[str, Any] = {
        "model": model_name, "story": story.name, "fit_run": 0,
        "heldout_runs": sorted({int(w.run) for w in story.words if w.run != 0}),
        "n_neurons": int(len(neurons)), "n_components": options["n_components"],
        "z_threshold": options["z_threshold"], "n_words_fit": int(activations.shape[0]),
        "network_sizes": [int(len(m)) for m in members], "union_size": int(len(union_index)),
    }
    if len(union_index) == 0:
        result["verdict"] = "no functional network passed the z threshold; nothing lesioned"
        return result
    union = NeuronSet.from_table(neurons, union_index, name="fn-union")
    result["union_layers"] = {int(k): int(v) for k, v in
                              zip(*np.unique(neurons.layer[union_index], return_counts=True))}
    loaded = load_model(model_name, device=device)
    model, tokenizer = loaded.model, loaded.tokenizer
    text = heldout_text(story)
    universe = universe_table(model, sorted(set(neurons.site.astype(str))),
                              sorted(set(int(x) for x in neurons.layer)))

    def score() -> dict[str, float]:
        with torch.no_grad():
            return score_text(model, tokenizer, text, kind=loaded.kind,
                              max_tokens=max_tokens).to_dict()

    result["baseline"] = score()
    with lesion(model, union):
        result["lesion"] = score()
    controls = []
    for control_seed in range(options["n_controls"]):
        control = layer_matched(union, universe, seed=seed + control_seed)
        with lesion(model, control):
            controls.append(score())
        controls[-1]["from_other_layers"] = _drawn_from_other_layers(union, control)
    result["controls"] = controls
    result["controls_from_other_layers"] = max((c["from_other_layers"] for c in controls), default=0)
    base = result["baseline"]["perplexity"]
    lesion_rise = result["lesion"]["perplexity"] - base
    control_rise = float(np.median([c["perplexity"] for c in controls])) - base
    result["perplexity_rise"] = {"lesion": lesion_rise, "controls_median": control_rise}
    result["ratio"] = rise_ratio(lesion_rise, control_rise)
    result["verdict"] = (
        f"lesioning {len(union_index)} FN neurons: perplexity {base:.2f} -> "
        f"{result['lesion']['perplexity']:.2f}; layer-matched random sets -> "
        f"{base + control_rise:.2f} (median of {len(controls)})")
    logger.info(result["verdict"])
    return result


def rise_ratio(lesion_rise: float, control_rise: float) -> float:
    """Perplexity rise of the lesion over the controls' median rise; NaN where that says
    nothing (the controls did not raise perplexity and the lesion did not either), inf only
    for a lesion that raised it beside controls that left it exactly unchanged."""
    if control_rise > 0:
        return float(lesion_rise / control_rise)
    if control_rise == 0 and lesion_rise > 0:
        return float("inf")
    return float("nan")


def _drawn_from_other_layers(target: Any, control: Any) -> int:
    """Neurons a layer-matched control had to draw from neighbouring layers (its layer held
    too few non-target neurons): the shortfall summed over (site, layer)."""
    wanted, drawn = target.layer_distribution(), control.layer_distribution()
    return int(sum(max(0, count - drawn.get(key, 0)) for key, count in wanted.items()))
