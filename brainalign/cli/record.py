"""``brainalign record``: record neuron values word by word (or straight to the TR grid,
``--to-tr``) on one or more stories.

A thin layer over :func:`brainalign.record.record_story`; the progress bar is the
recorder's (tqdm), the closing summary is read back from each recording's manifest.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from brainalign.cli import layout_option, main
from brainalign.models.registry import (DEFAULT_CAUSAL_MODEL, ModelNotInstalledError,
                                        UnknownModelError)

# brainalign.models.sites.ALL_SITE_NAMES and brainalign.record.recorder.POOLINGS, spelled
# out here because those modules import torch and every command (even --help) reads these
# options; tests/test_cli_terminal.py checks that they match. mlp.router exists only in
# mixture-of-experts blocks.
SITE_NAMES = ("mlp.inner", "mlp.out", "resid", "attn.out", "mlp.router")
POOLINGS = ("mean", "first", "last")


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
                if last < first:
                    raise click.BadParameter(
                        f"range {part!r} in {text!r} is reversed; write it low-high, "
                        f"e.g. '{last}-{first}'", param_hint="--layers")
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
              help="Registry name or alias (see `brainalign models`), local checkpoint "
              "directory, .gguf file or Hugging Face id owner/name (needs network access).")
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
@layout_option
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Storage dtype of the values written (default float16 on CUDA, float32 "
              "on CPU; pooling and resampling run in float32).")
@click.option("--to-tr", is_flag=True,
              help="Record straight to the TR grid of each story's scan: word rows are "
              "resampled and z-scored per run on the device; writes NeuronTimecourses.")
@click.option("--tr-method", type=click.Choice(["lanczos", "hrf"]), default=None,
              help="Word -> TR resampling, with --to-tr only [default: lanczos].")
@click.option("--trim", default=None,
              help="TRs dropped at the start and end of every run, e.g. '5,5'; with --to-tr "
              "only [default: 0,0].")
@click.option("--scan-tr", type=float, default=None,
              help="Repetition time (s) of the scan, for stories that do not carry theirs.")
@click.option("--scan-volumes", default=None,
              help="Volumes per run, e.g. '132,147' (with --scan-tr and --scan-first-volume).")
@click.option("--scan-first-volume", default=None,
              help="Stimulus time (s) of each run's first volume, e.g. '20' or '20,0'; no "
              "default, since a wrong value shifts every time course.")
def record_command(model_name, story_paths, sites, out_dir, layers, context_tokens,
                   stride_tokens, pooling, batch_size, device, overwrite, layout_path, dtype,
                   to_tr, tr_method, trim, scan_tr, scan_volumes, scan_first_volume) -> None:
    """Record neuron values, pooled to words (or straight to TRs), while a model reads stories."""
    import json

    import torch

    from brainalign.models.registry import load_model
    from brainalign.record import record_story
    from brainalign.stimuli import bundled_story, load_story
    from brainalign.timecourse.timecourses import TrResampling

    from brainalign.cli import check_device, check_out_dir, declare_layout_file

    layer_list = parse_layers(layers)
    given = [name for name, value in (("--tr-method", tr_method), ("--trim", trim))
             if value is not None]
    if given and not to_tr:
        raise click.UsageError(f"{' and '.join(given)} set how TR time courses are made; they "
                               "need --to-tr (without it the recording is of words)")
    check_out_dir(out_dir)
    device = check_device(device) or ("cuda" if torch.cuda.is_available() else "cpu")
    stories = [load_story(path) for path in story_paths] or [bundled_story()]
    stories = [_with_scan(story, scan_tr, scan_volumes, scan_first_volume) for story in stories]
    resampling = None
    if to_tr:
        missing = [s.name for s in stories if not s.has_scan]
        if missing:
            raise click.ClickException(
                f"--to-tr needs each story's scan; {', '.join(missing)} has none: give "
                "--scan-tr, --scan-volumes and --scan-first-volume")
        try:
            resampling = TrResampling(tr_method or "lanczos",
                                      trim=_numbers(trim or "0,0", int, "--trim"))
        except ValueError as err:
            raise click.ClickException(str(err)) from None
    try:
        loaded = load_model(model_name, device=device)
    except (UnknownModelError, ModelNotInstalledError) as err:
        raise click.ClickException(str(err)) from None
    declare_layout_file(loaded, layout_path)
    rows = []
    for story in stories:
        started = time.time()
        try:
            path = record_story(loaded, story, list(dict.fromkeys(sites)), out_dir,
                                layers=layer_list, context_tokens=context_tokens,
                                stride_tokens=stride_tokens, pooling=pooling,
                                batch_size=batch_size, overwrite=overwrite, dtype=dtype,
                                to_tr=resampling)
        except (ValueError, FileExistsError) as err:
            raise click.ClickException(str(err)) from None
        manifest = json.loads((Path(path) / "manifest.json").read_text())
        skipped = (Path(path) / "manifest.json").stat().st_mtime < started
        rows.append((story.name, manifest, Path(path), skipped))
    click.echo(f"\nmodel {model_name} on {device}; sites {', '.join(sites)}; "
               f"pooling {pooling}")
    for name, manifest, path, skipped in rows:
        note = " (already recorded, skipped)" if skipped else ""
        grid = (f"{manifest['n_tr']} TRs ({manifest['n_words']} words)"
                if manifest.get("grid") == "tr" else f"{manifest['n_words']} words")
        timing = manifest["timing"]
        click.echo(f"{name}: {manifest['n_neurons']} neurons x {grid}, "
                   f"{manifest.get('dtype', 'float32')}, in {timing['seconds']:.1f} s "
                   f"({timing['story_tokens_per_s']:,.0f} tokens/s) -> {path}{note}")


def _numbers(text: str, kind, option: str) -> list:
    try:
        return [kind(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}",
                                 param_hint=option) from None


def _with_scan(story, tr_s, volumes, first_volume):
    """The story with the scan given on the command line (all three options, or none)."""
    given = [tr_s is not None, volumes is not None, first_volume is not None]
    if not any(given):
        return story
    if not all(given):
        raise click.UsageError("give --scan-tr, --scan-volumes and --scan-first-volume together")
    first = _numbers(first_volume, float, "--scan-first-volume")
    try:  # one number is every run's, as the option's help says
        return story.with_scan(tr_s, _numbers(volumes, int, "--scan-volumes"),
                               first_volume_s=first[0] if len(first) == 1 else first)
    except ValueError as err:
        raise click.ClickException(f"story {story.name!r}: {err}") from None
