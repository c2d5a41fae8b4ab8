"""``brainalign record``: record neuron values word by word on one or more stories.

A thin layer over :func:`brainalign.record.record_story`; the progress bar is the
recorder's (tqdm), the closing summary is read back from each recording's manifest.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from brainalign.cli import main
from brainalign.models.registry import DEFAULT_CAUSAL_MODEL
from brainalign.models.sites import SITE_NAMES
from brainalign.record.recorder import POOLINGS


def parse_layers(text: str | None) -> list[int] | None:
    """``"0,5,10-12"`` -> ``[0, 5, 10, 11, 12]``; None or ``"all"`` -> None (every layer)."""
    if text is None or text.strip().lower() == "all":
        return None
    layers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                layers.extend(range(first, last + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise click.BadParameter(
                f"expected layer numbers like '0,5,10-12' or 'all', got {text!r}",
                param_hint="--layers") from None
    return layers


@main.command("record")
@click.option("--model", "model_name", default=DEFAULT_CAUSAL_MODEL, show_default=True,
              help="Registry name, local checkpoint directory or Hugging Face id.")
@click.option("--story", "story_paths", multiple=True, type=click.Path(exists=True),
              help="Story file or directory (TextGrid, Gentle JSON, TSV/CSV, story dir); "
              "repeat for several stories. Default: the bundled story.")
@click.option("--site", "sites", multiple=True, default=("mlp.inner",), show_default=True,
              type=click.Choice(SITE_NAMES), help="Neuron site; repeat for several.")
@click.option("--out", "out_dir", default="recordings", show_default=True,
              type=click.Path(file_okay=False), help="One sub-directory per story is written here.")
@click.option("--layers", default=None, help="Layers to record, e.g. '0,5,10-12' (default all).")
@click.option("--context-tokens", type=int, default=None,
              help="Tokens of context before (causal) or around (encoder) each word.")
@click.option("--stride-tokens", type=int, default=None, help="Tokens kept per window.")
@click.option("--pooling", type=click.Choice(POOLINGS), default="mean", show_default=True,
              help="How a word's tokens become one value per neuron.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Windows per forward pass.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--overwrite", is_flag=True, help="Replace recordings made with other settings.")
def record_command(model_name, story_paths, sites, out_dir, layers, context_tokens,
                   stride_tokens, pooling, batch_size, device, overwrite) -> None:
    """Record neuron values, pooled to words, while a model reads stories."""
    import torch

    from brainalign.models.registry import load_model
    from brainalign.record import Recording, record_story
    from brainalign.stimuli import bundled_story, load_story

    layer_list = parse_layers(layers)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    stories = [load_story(path) for path in story_paths] or [bundled_story()]
    loaded = load_model(model_name, device=device)
    rows = []
    for story in stories:
        started = time.time()
        try:
            path = record_story(loaded, story, list(dict.fromkeys(sites)), out_dir,
                                layers=layer_list, context_tokens=context_tokens,
                                stride_tokens=stride_tokens, pooling=pooling,
                                batch_size=batch_size, overwrite=overwrite)
        except (ValueError, FileExistsError) as err:
            raise click.ClickException(str(err)) from None
        recording = Recording.open(path)
        timing = recording.manifest["timing"]
        skipped = (Path(path) / "manifest.json").stat().st_mtime < started
        rows.append((story.name, recording.n_words, len(recording.neurons),
                     timing["seconds"], timing["story_tokens_per_s"], Path(path), skipped))
    click.echo(f"\nmodel {model_name} on {device}; sites {', '.join(sites)}; "
               f"pooling {pooling}")
    for name, n_words, n_neurons, seconds, tokens_per_s, path, skipped in rows:
        note = " (already recorded, skipped)" if skipped else ""
        click.echo(f"{name}: {n_neurons} neurons x {n_words} words in {seconds:.1f} s "
                   f"({tokens_per_s:,.0f} tokens/s) -> {path}{note}")
