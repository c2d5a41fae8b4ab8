"""Studies A and B on a real model: SmolLM2-135M reading the bundled story and Alice.

Writes ``analysis/results/patterns_real_model.json``:

- **Study A** (bundled story, TR grid): the model's ``mlp.out`` neurons (30 layers x 576)
  are recorded word by word (:func:`brainalign.record.record_story`), put on the story's
  TR grid (:func:`brainalign.timecourse.recording_to_tr`), and decomposed into K atoms by
  sparse dictionary learning (:func:`brainalign.patterns.fit_atoms`). Reported: the layer
  distribution of the subgroups, code sparsity, stability across seeds and between the
  story's two runs (split half).
- **Study B** (tokens): ``mlp.out`` of every layer for every token of text passages
  (the bundled story's text, and passages of the public-domain Alice book text from
  ``../shared/data/alice_brennan2016/alice``). Functional networks by spatial ICA
  (:func:`brainalign.patterns.find_functional_networks`) at the code default z > 1.96 and
  the study's z > 3.6; group templates from group ICA over the first passages and
  recurrence counts over the other passages; layer distribution of network neurons.

Runs in a few minutes on a 2-core CPU. Usage::

    python analysis/patterns_real_model.py [--alice PATH] [--n-template 12] [--n-individual 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from brainalign.models.registry import load_model
from brainalign.models.sites import resolve_sites, site_hooks
from brainalign.patterns import (STUDY_Z_THRESHOLD, find_functional_networks, fit_atoms,
                                 group_templates, recurrence_counts)
from brainalign.provenance import provenance_block
from brainalign.record import Recording, record_story
from brainalign.record.neurons import NeuronTable
from brainalign.stimuli.bundled import bundled_story
from brainalign.timecourse import NeuronTimecourses, recording_to_tr

logger = logging.getLogger("patterns_real_model")

OUT = Path(__file__).resolve().parent / "results" / "patterns_real_model.json"
SHARED = Path(os.environ.get("BRAINALIGN_SHARED_DATA",
                             Path(__file__).resolve().parents[2] / "shared" / "data"))
MODEL = "smollm2-135m"
SITE = "mlp.out"
#: L1 penalty on unit-norm neurons: codes below about 0.2 (correlation units) are zeroed.
ALPHA = 0.2


def layer_histogram(layers: np.ndarray, n_layers: int) -> list[int]:
    return np.bincount(layers, minlength=n_layers).astype(int).tolist()


def last_layers_fraction(layers: np.ndarray, n_layers: int, last: int = 6) -> float | None:
    return float(np.mean(layers >= n_layers - last)) if len(layers) else None


# -- study A -----------------------------------------------------------------------------

def story_timecourses(loaded, cache: Path) -> NeuronTimecourses:
    """The bundled story's mlp.out time courses on its TR grid. The recording is cached
    (``record_story`` reuses it only when its settings match and its checksums verify,
    and records it again otherwise);
    the resampling is redone every run, so it always has the current kernels."""
    path = record_story(loaded, bundled_story(), [SITE], cache / "recordings", progress=False,
                        overwrite=True)
    return recording_to_tr(Recording.open(path))


def study_a(loaded, n_atoms: int, cache: Path) -> dict:
    story = bundled_story()
    start = time.perf_counter()
    timecourses = story_timecourses(loaded, cache)
    record_s = time.perf_counter() - start
    n_layers = loaded.n_layers
    start = time.perf_counter()
    patterns = fit_atoms(timecourses, n_atoms, train_runs="all", method="dictionary",
                         alpha=ALPHA, init="random", max_iter=30, code_tol=1e-3, random_state=0,
                         device="cpu", stability_seeds=[1, 2], split_half=True)
    fit_s = time.perf_counter() - start
    composition = patterns.composition("layer")
    assigned = patterns.subgroup >= 0
    sizes = np.bincount(patterns.subgroup[assigned], minlength=n_atoms)
    dominant_layer, dominant_share = [], []
    for k in range(n_atoms):
        members = patterns.neurons.layer[patterns.subgroup == k]
        counts = np.bincount(members, minlength=n_layers)
        dominant_layer.append(int(counts.argmax()) if len(members) else None)
        dominant_share.append(float(counts.max() / len(members)) if len(members) else None)
    mean_layer = [float(patterns.neurons.layer[patterns.subgroup == k].mean()) if sizes[k] else None
                  for k in range(n_atoms)]
    return dict(
        story=story.name, n_runs=story.n_runs, n_tr=int(timecourses.n_tr),
        n_neurons=int(timecourses.n_neurons), site=SITE, n_atoms=n_atoms,
        method=f"dictionary learning (FISTA codes, alpha {ALPHA} on unit-norm neurons, "
               "random init, 30 iterations)",
        fit_runs=patterns.fit_runs, record_and_resample_s=record_s, fit_with_stability_s=fit_s,
        code_density=float(patterns.support.mean()),
        neurons_without_atom=int((~assigned).sum()),
        atoms_per_neuron_mean=float(patterns.support.sum(0).mean()),
        subgroup_sizes=sizes.astype(int).tolist(),
        subgroup_mean_layer=mean_layer, subgroup_dominant_layer=dominant_layer,
        subgroup_dominant_layer_share=dominant_share,
        composition_by_layer={str(k): [int(composition.loc[k].get(l, 0)) for l in range(n_layers)]
                              for k in composition.index},
        stability=dict(
            seed=dict(atom_r_mean=patterns.stability["seed"]["atom_r_mean"],
                      loading_r_mean=patterns.stability["seed"]["loading_r_mean"],
                      subgroup_ari_mean=patterns.stability["seed"]["subgroup_ari_mean"]),
            split_half={key: patterns.stability["split_half"][key]
                        for key in ("scheme", "loading_r_mean", "loading_r_min", "subgroup_ari")}),
    )


# -- study B -----------------------------------------------------------------------------

def token_activations(loaded, text: str, max_tokens: int) -> tuple[np.ndarray, NeuronTable]:
    """mlp.out of every layer for every token of ``text``: (n_tokens, n_layers * width)."""
    sites = resolve_sites(loaded.model, [SITE])
    ids = loaded.tokenizer(text, return_tensors="pt", truncation=True,
                           max_length=max_tokens)["input_ids"].to(loaded.device)
    captured = {}

    def keep(site, tensor):
        captured[site.layer] = tensor[0].detach().float().cpu()

    with torch.no_grad(), site_hooks(loaded.model, sites, keep):
        loaded.model(input_ids=ids)
    neurons = NeuronTable.from_sites([(s.layer, s.name, s.width) for s in sites])
    return torch.cat([captured[s.layer] for s in sites], dim=1).numpy(), neurons


def alice_passages(path: Path, n_passages: int, words_per_passage: int) -> list[str]:
    """Consecutive passages of the book's text (Gutenberg header and footer removed)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    start = text.find("CHAPTER I.")
    end = text.find("End of Project Gutenberg")
    words = re.sub(r"\s+", " ", text[start:end if end > 0 else None]).split(" ")
    passages = [" ".join(words[i:i + words_per_passage])
                for i in range(0, len(words) - words_per_passage, words_per_passage)]
    if len(passages) < n_passages:
        raise ValueError(f"{path} gives {len(passages)} passages, {n_passages} needed")
    return passages[:n_passages]


def summarize_networks(networks, n_layers: int) -> dict:
    union_layers = networks.neurons.layer[networks.union()]
    return dict(
        sizes=[len(n) for n in networks.networks],
        union_size=int(len(networks.union())),
        union_fraction_of_neurons=float(len(networks.union()) / networks.n_neurons),
        union_layer_histogram=layer_histogram(union_layers, n_layers),
        union_fraction_in_last_6_layers=last_layers_fraction(union_layers, n_layers),
        per_network_fraction_in_last_6_layers=[
            last_layers_fraction(networks.neurons.layer[n], n_layers) for n in networks.networks],
    )


def study_b(loaded, alice: Path | None, n_components: int, n_template: int, n_individual: int,
            max_tokens: int) -> dict:
    n_layers = loaded.n_layers
    result = {"n_components": n_components, "z_thresholds": [1.96, STUDY_Z_THRESHOLD],
              "max_tokens_per_input": max_tokens}
    story = bundled_story()
    acts, neurons = token_activations(loaded, " ".join(story.texts), max_tokens)
    result["bundled_story"] = {"n_tokens": int(acts.shape[0]), "n_neurons": int(acts.shape[1])}
    for z in (1.96, STUDY_Z_THRESHOLD):
        networks = find_functional_networks(acts, neurons, n_components, z_threshold=z,
                                            random_state=0, device="cpu")
        result["bundled_story"][f"z>{z}"] = summarize_networks(networks, n_layers)
    if alice is None:
        result["alice"] = {"skipped": "Alice text not found (pass --alice)"}
        return result
    start = time.perf_counter()
    passages = alice_passages(alice, n_template + n_individual, words_per_passage=150)
    inputs = [token_activations(loaded, p, max_tokens)[0] for p in passages]
    record_s = time.perf_counter() - start
    logger.info("study B: %d Alice passages through the model in %.1f s", len(inputs), record_s)
    alice_result = dict(source=str(alice.name), n_template_inputs=n_template,
                        n_individual_inputs=n_individual, words_per_passage=150,
                        tokens_per_input=[int(a.shape[0]) for a in inputs], record_s=record_s)
    for z in (1.96, STUDY_Z_THRESHOLD):
        logger.info("study B: group templates and recurrence at z > %s", z)
        templates = group_templates(inputs[:n_template], neurons, n_components, z_threshold=z,
                                    random_state=0, device="cpu")
        individual = [find_functional_networks(a, neurons, n_components, z_threshold=z,
                                               random_state=0, device="cpu")
                      for a in inputs[n_template:]]
        counts = recurrence_counts(templates, individual)
        individual_union = np.concatenate([n.neurons.layer[n.union()] for n in individual])
        alice_result[f"z>{z}"] = dict(
            templates=summarize_networks(templates, n_layers),
            recurrence_counts=counts.astype(int).tolist(),
            recurrence_of=n_individual,
            individual_union_layer_histogram=layer_histogram(individual_union, n_layers),
            individual_union_fraction_in_last_6_layers=last_layers_fraction(individual_union, n_layers),
            individual_network_size_mean=float(np.mean([np.mean([len(x) for x in n.networks])
                                                        for n in individual])),
        )
    result["alice"] = alice_result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alice", type=Path,
                        default=SHARED / "alice_brennan2016" / "alice" / "alice-gutenberg.txt")
    parser.add_argument("--n-atoms", type=int, default=32)
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--n-template", type=int, default=12)
    parser.add_argument("--n-individual", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "BRAINALIGN_CACHE", Path.home() / ".cache" / "brainalign")) / "patterns_real_model",
        help="where the story's recording and time courses are kept between runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(0)
    start = time.perf_counter()
    loaded = load_model(MODEL)
    alice = args.alice if args.alice.is_file() else None
    a = study_a(loaded, args.n_atoms, args.cache)
    logger.info("study A done in %.1f s", time.perf_counter() - start)
    b = study_b(loaded, alice, args.n_components, args.n_template, args.n_individual,
                args.max_tokens)
    document = dict(
        model=MODEL, n_layers=loaded.n_layers, site=SITE, study_a=a, study_b=b,
        total_s=time.perf_counter() - start,
        machine="2-core CPU dev machine (shared)",
        provenance=provenance_block(stage="analysis", analysis="patterns_real_model",
                                    model=loaded.provenance, args={k: str(v) for k, v in vars(args).items()}),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str))
    logger.info("wrote %s in %.1f s", args.out, document["total_s"])


if __name__ == "__main__":
    main()
