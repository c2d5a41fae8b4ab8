"""Replicate study B (Liu et al., ICML 2025): ICA functional networks of neurons and lesions.

Networks are found by spatial FastICA on the mlp.out neurons of every layer while the model
reads the *fit* half of public-domain English prose (every token a time point); every
intervention is evaluated on the *held-out* half: lesion of the union of networks vs
random sets matched by count, by layer distribution and by activation magnitude (several
seeds), single-network lesions, keep-only the union of k networks for growing k, and
amplification (+c, x c) of the union vs the same on a count-matched random set. Writes
analysis/results/replicate_b.json and prints a table beside the study's claims.

    python analysis/replicate_b.py --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from brainalign.interventions.controls import count_matched, layer_matched, magnitude_matched
from brainalign.interventions.corpora import prose_split, read_prose
from brainalign.interventions.evaluation import causal_perplexity, text_prefix, tokenize
from brainalign.interventions.neurons import (ActivationStatistics, NeuronSet, add, keep_only, lesion, scale,
                                              token_activations)
from brainalign.models.registry import load_model
from brainalign.patterns import find_functional_networks
from brainalign.provenance import config_hash, provenance_block

DEFAULT_PROSE = Path(__file__).resolve().parents[2] / "shared" / "data" / "alice_brennan2016" / "alice" / "alice-gutenberg.txt"
RESULTS = Path(__file__).resolve().parent / "results"

CLAIMS = {
    "union": "lesioning the union of 10 networks (< 2-3% of neurons) collapses performance",
    "random": "a random mask of similar or larger size leaves it near baseline",
    "target": "union ppl ratio >= 100 x mean count-matched and >= 10 x layer-matched",
    "layers": "90-94% of network neurons lie in the last layers",
    "keep_only": "keeping only the union of many networks (128) restores near-baseline performance",
    "amplify": "calibrated amplification can improve performance",
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prose", type=Path, default=DEFAULT_PROSE)
    parser.add_argument("--site", default="mlp.out")
    parser.add_argument("--fit-tokens", type=int, default=2048)
    parser.add_argument("--eval-tokens", type=int, default=512)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--n-components", type=int, default=10)
    parser.add_argument("--z-threshold", type=float, default=3.6)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per random control")
    parser.add_argument("--keep-only-k", type=int, nargs="*", default=[10, 64])
    parser.add_argument("--add-constants", type=float, nargs="*", default=[1.0, 5.0])
    parser.add_argument("--scale-factors", type=float, nargs="*", default=[2.0, 0.5])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "replicate_b.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("replicate_b")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()

    loaded = load_model(args.model, device=args.device, dtype=torch.float32)
    model, tokenizer = loaded.model, loaded.tokenizer
    if loaded.kind != "causal":
        raise SystemExit(f"this replication scores perplexity of a causal LM; {args.model} is {loaded.kind}")
    split = prose_split(read_prose(args.prose), heldout_fraction=0.5, name=str(args.prose))
    fit_ids = tokenize(tokenizer, split.fit, args.fit_tokens)
    eval_ids = tokenize(tokenizer, split.heldout, args.eval_tokens)

    # 1. Networks from ICA on the fit text (tokens x all layers' neurons).
    activations, neurons = token_activations(model, fit_ids, [args.site], window=args.window,
                                             prefix_ids=text_prefix(tokenizer))
    log.info("activations %s", activations.shape)

    def networks_for(k: int):
        found = find_functional_networks(activations, neurons, n_components=k, z_threshold=args.z_threshold,
                                         random_state=0, device=args.device)
        return [NeuronSet.from_table(neurons, net, name=f"network{i}") for i, net in enumerate(found.networks)]

    networks = networks_for(args.n_components)
    union = NeuronSet({}, name="union").union(*networks, name="union")
    statistics = ActivationStatistics.from_activations(activations, neurons)
    n_layers = loaded.n_layers
    log.info("union of %d networks: %d neurons", len(networks), union.size)

    # 2. Evaluation on held-out text.
    def evaluate():
        return causal_perplexity(model, eval_ids, window=args.window, prefix_ids=text_prefix(tokenizer))

    base = evaluate()
    rows: dict[str, dict] = {}

    def record(name: str, score, neuron_set: NeuronSet | None = None, **extra):
        rows[name] = {"ppl": score.perplexity, "ppl_ratio": score.perplexity / base.perplexity,
                      "accuracy": score.accuracy, "size": neuron_set.size if neuron_set is not None else None,
                      **extra}
        log.info("%-28s ppl %10.2f  x%.3f", name, score.perplexity, rows[name]["ppl_ratio"])

    record("baseline", base)
    with lesion(model, union):
        record("union", evaluate(), union)
    controls = {
        "count": [count_matched(union, neurons, seed=s) for s in range(args.seeds)],
        "layer": [layer_matched(union, neurons, seed=s) for s in range(args.seeds)],
        "magnitude": [magnitude_matched(union, statistics, seed=s) for s in range(args.seeds)],
    }
    for kind, sets in controls.items():
        for control in sets:
            with lesion(model, control):
                record(f"{kind}-matched/{control.name}", evaluate(), control)
    for network in networks:
        with lesion(model, network):
            record(f"single/{network.name}", evaluate(), network)

    # Keep-only the union of k networks (k ICA components).
    for k in args.keep_only_k:
        kept = union if k == args.n_components else NeuronSet({}).union(*networks_for(k), name=f"union{k}")
        with keep_only(model, kept, universe=[args.site]):  # defined for an empty union too
            record(f"keep-only/k={k}", evaluate(), kept)

    # Amplification of the union vs a count-matched random set.
    random_set = controls["count"][0]
    for constant in args.add_constants:
        for label, neuron_set in (("union", union), ("random", random_set)):
            with add(model, neuron_set, constant):
                record(f"add+{constant:g}/{label}", evaluate(), neuron_set)
    for factor in args.scale_factors:
        for label, neuron_set in (("union", union), ("random", random_set)):
            with scale(model, neuron_set, factor):
                record(f"scale x{factor:g}/{label}", evaluate(), neuron_set)

    def mean_ratio(kind):
        return float(np.mean([rows[f"{kind}-matched/{c.name}"]["ppl_ratio"] for c in controls[kind]]))

    histogram = union.layer_histogram(n_layers)
    last_six = int(histogram[-6:].sum())
    summary = {
        "model": args.model,
        "union_size": union.size,
        "union_fraction": union.size / len(neurons),
        "union_ppl_ratio": rows["union"]["ppl_ratio"],
        "random_ppl_ratio": mean_ratio("count"),
        "layer_matched_ppl_ratio": mean_ratio("layer"),
        "magnitude_matched_ppl_ratio": mean_ratio("magnitude"),
        "baseline_ppl": base.perplexity,
        "union_last6_fraction": last_six / max(union.size, 1),
    }
    summary["target_100x_count_matched"] = summary["union_ppl_ratio"] >= 100 * summary["random_ppl_ratio"]
    summary["target_10x_layer_matched"] = summary["union_ppl_ratio"] >= 10 * summary["layer_matched_ppl_ratio"]
    config = {k: str(v) for k, v in vars(args).items() if k not in ("out", "threads", "device")}
    result = {
        "summary": summary,
        "conditions": rows,
        "networks": [n.to_dict() | {"size": n.size} for n in networks],
        "union_layer_histogram": histogram.tolist(),
        "split": split.description,
        "fit_tokens": int(fit_ids.numel()),
        "eval_tokens": int(eval_ids.numel()),
        "claims": CLAIMS,
        "provenance": provenance_block(model=loaded.provenance, config=config, config_hash=config_hash(config),
                                       device=str(loaded.device), threads=torch.get_num_threads(),
                                       runtime_s=round(time.time() - started, 1)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print_table(result)
    return result


def print_table(result: dict) -> None:
    summary = result["summary"]
    print(f"\nStudy B on {summary['model']}: {summary['union_size']} union neurons "
          f"({100 * summary['union_fraction']:.2f}%), held-out ppl baseline {summary['baseline_ppl']:.2f}\n")
    print(f"{'condition':34} {'size':>6} {'ppl':>12} {'ratio':>10} {'top-1 acc':>9}")
    for name, row in result["conditions"].items():
        size = "" if row["size"] is None else row["size"]
        print(f"{name:34} {size:>6} {row['ppl']:12.2f} {row['ppl_ratio']:10.3f} {row['accuracy']:9.3f}")
    print(f"\nclaim: {CLAIMS['target']}\n  measured: union x{summary['union_ppl_ratio']:.1f}; count-matched mean "
          f"x{summary['random_ppl_ratio']:.3f} ({'MET' if summary['target_100x_count_matched'] else 'NOT MET'}); "
          f"layer-matched mean x{summary['layer_matched_ppl_ratio']:.3f} "
          f"({'MET' if summary['target_10x_layer_matched'] else 'NOT MET'}); magnitude-matched mean "
          f"x{summary['magnitude_matched_ppl_ratio']:.3f}")
    print(f"claim: {CLAIMS['layers']}\n  measured: {100 * summary['union_last6_fraction']:.1f}% in the last 6 layers")
    print(f"runtime {result['provenance']['runtime_s']} s")


if __name__ == "__main__":
    main()
