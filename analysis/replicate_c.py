"""Replicate study C (Zhang et al., ACL 2024): a 1% core region of linguistic competence.

Importance |theta * g| is accumulated per language on the *fit* articles of the UDHR
(preamble and articles 1-15) of the study's six languages; per-matrix top / bottom /
random regions are zeroed and perplexity is measured on the *held-out* articles (16-30) of
at least 20 languages; monolingual regions are zeroed on the six languages; the region's
concentration on hidden dimensions is probed by multiplying one parameter by 4; and the
region is frozen during continued training on other languages, measuring forgetting on
held-out English prose. Writes analysis/results/replicate_c.json and prints a table beside
the study's claims.

    python analysis/replicate_c.py --model smollm2-135m
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from brainalign.interventions.corpora import prose_split, read_prose, udhr_split
from brainalign.interventions.evaluation import causal_perplexity, text_prefix, tokenize
from brainalign.interventions.regions import (continue_training, dimension_parameter, dimension_profile,
                                              language_importance, monolingual_region, scale_region,
                                              select_region, token_chunks, zero_region)
from brainalign.models.registry import load_model
from brainalign.provenance import config_hash, provenance_block

IMPORTANCE_LANGUAGES = ("ar", "es", "ru", "zh", "ko", "vi")
EVAL_LANGUAGES = IMPORTANCE_LANGUAGES + ("en", "fr", "de", "it", "pt", "nl", "pl", "tr", "id", "sv", "fi",
                                         "cs", "hu", "ro", "uk", "ja", "hi", "el", "he", "fa")
TRAIN_LANGUAGES = ("ja", "hi", "el", "he")
DEFAULT_PROSE = Path(__file__).resolve().parents[2] / "shared" / "data" / "alice_brennan2016" / "alice" / "alice-gutenberg.txt"
RESULTS = Path(__file__).resolve().parent / "results"

CLAIMS = {
    "top": "zeroing the top 1% makes perplexity explode in every language",
    "random": "random 1% (same per-matrix counts) barely moves it",
    "bottom": "bottom 1% barely moves it",
    "target": "top ratio >= 100 x random ratio in every language with finite baseline",
    "dimension": "x4 on one parameter of the concentrated dimension >> same change elsewhere",
    "monolingual": "zeroing a monolingual region breaks that language most",
    "freeze": "freezing the region during further training reduces forgetting of English",
}


def ratio(score, base) -> float:
    return score.perplexity / base.perplexity if math.isfinite(base.perplexity) else float("nan")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--importance-languages", nargs="+", default=list(IMPORTANCE_LANGUAGES))
    parser.add_argument("--eval-languages", nargs="+", default=list(EVAL_LANGUAGES))
    parser.add_argument("--importance-tokens", type=int, default=512, help="fit tokens per language")
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--eval-tokens", type=int, default=128, help="held-out tokens per language")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--probe-layer", type=int, default=1,
                        help="block (0-based) of the single-parameter probe, as the study's "
                             "layer-1 parameter; -1: the matrix with most entries anywhere")
    parser.add_argument("--train-steps", type=int, default=4)
    parser.add_argument("--train-lr", type=float, default=1e-4)
    parser.add_argument("--prose", type=Path, default=DEFAULT_PROSE, help="English prose for forgetting")
    parser.add_argument("--udhr", type=Path, default=None, help="UDHR declaration folder")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "replicate_c.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("replicate_c")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    torch.manual_seed(args.seed)

    loaded = load_model(args.model, device=args.device, dtype=torch.float32)
    model, tokenizer = loaded.model, loaded.tokenizer
    if loaded.kind != "causal":
        raise SystemExit(f"study C needs a causal LM; {args.model} is {loaded.kind}")
    splits = {lang: udhr_split(lang, root=args.udhr) for lang in
              dict.fromkeys(args.importance_languages + args.eval_languages + list(TRAIN_LANGUAGES))}

    def evaluate(lang: str):
        ids = tokenize(tokenizer, splits[lang].heldout, args.eval_tokens)
        return causal_perplexity(model, ids, window=args.window, prefix_ids=text_prefix(tokenizer))

    # 1. Importance on the fit articles of the six languages.
    fit_ids = {lang: tokenize(tokenizer, splits[lang].fit, args.importance_tokens)
               for lang in args.importance_languages}
    log.info("importance over %s", {k: v.numel() for k, v in fit_ids.items()})
    importance = language_importance(model, fit_ids, fraction=args.fraction, chunk_tokens=args.chunk_tokens,
                                     progress=True, prefix_ids=text_prefix(tokenizer))
    regions = {which: select_region(importance.total, args.fraction, which, seed=args.seed)
               for which in ("top", "bottom", "random")}
    log.info("regions: %d entries each (%.3f%% of block matrices)", regions["top"].size,
             100 * regions["top"].fraction)

    # 2. Zeroing, evaluated on held-out articles.
    scores = {"baseline": {lang: evaluate(lang) for lang in dict.fromkeys(args.eval_languages
                                                                          + args.importance_languages)}}
    for which, region in regions.items():
        with zero_region(model, region):
            scores[which] = {lang: evaluate(lang) for lang in args.eval_languages}
        log.info("zeroed %s region", which)
    table = {}
    for lang in args.eval_languages:
        base = scores["baseline"][lang]
        table[lang] = {"baseline_ppl": base.perplexity, "baseline_accuracy": base.accuracy,
                       **{f"{w}_ppl_ratio": ratio(scores[w][lang], base) for w in regions},
                       **{f"{w}_accuracy": scores[w][lang].accuracy for w in regions}}

    # 3. Monolingual regions, evaluated on the six languages.
    monolingual = {}
    for lang in args.importance_languages:
        region = monolingual_region(importance, lang)
        with zero_region(model, region):
            monolingual[lang] = {"size": region.size,
                                 **{other: ratio(evaluate(other), scores["baseline"][other])
                                    for other in args.importance_languages}}
    log.info("monolingual regions done")

    # 4. Dimension dependency: x4 on one parameter of the most concentrated dimension.
    profile = dimension_profile(model, regions["top"])
    top_dim, control_dim = int(profile.top_dimensions(1)[0]), profile.control_dimension()
    probe_layer = None if args.probe_layer < 0 else args.probe_layer
    try:
        probe, twin = dimension_parameter(model, regions["top"], importance.total, top_dim,
                                          control_dim, layer=probe_layer)
    except ValueError as error:   # the dimension has no region entry in that block
        log.info("%s; probing the matrix with the most entries on it in any block", error)
        probe_layer = None
        probe, twin = dimension_parameter(model, regions["top"], importance.total, top_dim,
                                          control_dim)
    probe_lang = "zh" if "zh" in args.eval_languages else args.eval_languages[0]
    with scale_region(model, probe, 4.0):
        probe_score = evaluate(probe_lang)
    with scale_region(model, twin, 4.0):
        twin_score = evaluate(probe_lang)
    single_top = ratio(probe_score, scores["baseline"][probe_lang])
    single_control = ratio(twin_score, scores["baseline"][probe_lang])
    log.info("dimension probe done")

    # 5. Continued training on other languages, region frozen or not; forgetting on English.
    english = prose_split(read_prose(args.prose), heldout_fraction=0.5, name=str(args.prose))
    english_ids = tokenize(tokenizer, english.heldout, 512)
    train_ids = torch.cat([tokenize(tokenizer, splits[lang].fit, args.chunk_tokens * args.train_steps)
                           for lang in TRAIN_LANGUAGES])
    generator = torch.Generator().manual_seed(args.seed)
    chunks = list(token_chunks(train_ids, args.chunk_tokens))
    order = torch.randperm(len(chunks), generator=generator)[:args.train_steps].tolist()
    train_chunks = [chunks[i] for i in order]
    prefix = text_prefix(tokenizer)
    english_before = causal_perplexity(model, english_ids, window=args.window, prefix_ids=prefix)
    training = {}
    for label, frozen in (("frozen", regions["top"]), ("unfrozen", None), ("random_frozen", regions["random"])):
        trained = copy.deepcopy(model)
        losses = continue_training(trained, train_chunks, frozen=frozen, lr=args.train_lr,
                                   prefix_ids=prefix)
        after = causal_perplexity(trained, english_ids, window=args.window, prefix_ids=prefix)
        training[label] = {"losses": losses, "english_ppl_after": after.perplexity,
                           "english_ppl_ratio": after.perplexity / english_before.perplexity}
        del trained
    log.info("training done")

    finite = [lang for lang in args.eval_languages if math.isfinite(table[lang]["baseline_ppl"])]
    top_over_random = {lang: table[lang]["top_ppl_ratio"] / table[lang]["random_ppl_ratio"] for lang in finite}
    summary = {
        "model": args.model,
        "languages": list(args.eval_languages),
        "importance_languages": list(args.importance_languages),
        "fraction": args.fraction,
        "top_ppl_ratio": {lang: table[lang]["top_ppl_ratio"] for lang in args.eval_languages},
        "random_ppl_ratio": {lang: table[lang]["random_ppl_ratio"] for lang in args.eval_languages},
        "bottom_ppl_ratio": {lang: table[lang]["bottom_ppl_ratio"] for lang in args.eval_languages},
        "single_param_ratio_top_dim": single_top,
        "single_param_ratio_control_dim": single_control,
        "target_top_over_random_100x_all_languages": all(v >= 100 for v in top_over_random.values()),
        # the probe must raise perplexity, and by more than the control moves it either way
        "target_single_param": bool(single_top > 1.0 and
                                    abs(math.log(single_top)) > abs(math.log(single_control))),
        "english_forgetting_ratio_frozen": training["frozen"]["english_ppl_ratio"],
        "english_forgetting_ratio_unfrozen": training["unfrozen"]["english_ppl_ratio"],
    }
    config = {k: str(v) for k, v in vars(args).items() if k not in ("out", "threads", "device")}
    result = {
        "summary": summary,
        "per_language": table,
        "top_over_random": top_over_random,
        "monolingual": monolingual,
        "dimension": {"top_dimension": top_dim, "control_dimension": control_dim,
                      "concentration": profile.concentration, "top_dimensions": profile.top_dimensions(10).tolist(),
                      "top_dimension_counts": profile.counts[profile.top_dimensions(10)].tolist(),
                      "probe_layer": probe_layer, "probe_layer_asked": args.probe_layer,
                      "probe_parameter": probe.name, "control_parameter": twin.name, "language": probe_lang,
                      "baseline_ppl": scores["baseline"][probe_lang].perplexity,
                      "probe_ppl": probe_score.perplexity, "control_ppl": twin_score.perplexity},
        "training": {"train_languages": list(TRAIN_LANGUAGES), "steps": args.train_steps, "lr": args.train_lr,
                     "english_ppl_before": english_before.perplexity, **training},
        "region_sizes": {w: r.size for w, r in regions.items()},
        "n_block_parameters": regions["top"].n_parameters,
        "importance_tokens": importance.n_tokens,
        "splits": {lang: s.description for lang, s in splits.items()} | {"english": english.description},
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
    print(f"\nStudy C on {summary['model']}: per-matrix {100 * summary['fraction']:g}% regions, "
          f"importance on {', '.join(summary['importance_languages'])}; held-out UDHR articles\n")
    print(f"{'lang':6} {'base ppl':>9} {'top x':>12} {'random x':>9} {'bottom x':>9} {'top/random':>11}")
    for lang, row in result["per_language"].items():
        print(f"{lang:6} {row['baseline_ppl']:9.2f} {row['top_ppl_ratio']:12.1f} {row['random_ppl_ratio']:9.3f} "
              f"{row['bottom_ppl_ratio']:9.3f} {row['top_ppl_ratio'] / row['random_ppl_ratio']:11.1f}")
    values = np.array(list(result["top_over_random"].values()))
    print(f"\nclaim: {CLAIMS['target']}\n  measured: min top/random = {values.min():.1f} "
          f"-> {'MET' if summary['target_top_over_random_100x_all_languages'] else 'NOT MET'}")
    dim = result["dimension"]
    print(f"claim: {CLAIMS['dimension']}\n  measured on {dim['language']}: dimension {dim['top_dimension']} "
          f"(concentration {dim['concentration']:.1f}x uniform) ppl {dim['baseline_ppl']:.2f} -> "
          f"{dim['probe_ppl']:.2f}; control dimension {dim['control_dimension']} -> {dim['control_ppl']:.2f} "
          f"-> {'MET' if summary['target_single_param'] else 'NOT MET'}")
    print(f"claim: {CLAIMS['monolingual']}")
    for lang, row in result["monolingual"].items():
        others = {k: v for k, v in row.items() if k not in ("size", lang)}
        print(f"  {lang}: {row['size']} entries; own ppl x{row[lang]:.2f}, others max x{max(others.values()):.2f}")
    training = result["training"]
    print(f"claim: {CLAIMS['freeze']}\n  English ppl {training['english_ppl_before']:.2f} -> frozen "
          f"{training['frozen']['english_ppl_after']:.2f}, random-frozen {training['random_frozen']['english_ppl_after']:.2f}, "
          f"unfrozen {training['unfrozen']['english_ppl_after']:.2f} ({training['steps']} steps on "
          f"{', '.join(training['train_languages'])})")
    print(f"runtime {result['provenance']['runtime_s']} s")


if __name__ == "__main__":
    main()
