"""``brainalign lesion``: perplexity of a model with a neuron set edited, beside the intact model."""

from __future__ import annotations

import json
from pathlib import Path

import click

from brainalign.cli import layout_option, main
from brainalign.models.registry import (DEFAULT_CAUSAL_MODEL, ModelNotInstalledError,
                                        UnknownModelError)


@main.command("lesion")
@click.option("--model", "model_name", default=DEFAULT_CAUSAL_MODEL, show_default=True,
              help="Registry name or alias (see `brainalign models`), local directory, .gguf "
              "file or Hugging Face id owner/name (needs network access).")
@click.option("--neurons", "neurons_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help='JSON {"name": ..., "units": {"L27.mlp.out": [3, 17, ...]}}.')
@click.option("--mode", type=click.Choice(["zero", "keep_only", "scale", "add"]), default="zero",
              show_default=True)
@click.option("--value", type=float, default=None,
              help="Factor (--mode scale) or constant (--mode add); required by those modes.")
@click.option("--text", "text_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Plain-text file to score.")
@click.option("--udhr", "language", help="Score the UDHR in this language (code, BCP 47 or ISO 639-3).")
@click.option("--max-tokens", type=int, default=1024, show_default=True)
@click.option("--window", type=int, default=256, show_default=True)
@click.option("--stride", type=int, default=None, help="Default: the window.")
@click.option("--device", default="cpu", show_default=True)
@layout_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the scores as JSON.")
def lesion_command(model_name, neurons_path, mode, value, text_path, language, max_tokens, window, stride,
                   device, layout_path, out) -> None:
    """Score a text with the model intact and with NEURONS edited (zero, keep-only, scale, add)."""
    from brainalign.interventions.corpora import read_prose, read_udhr
    from brainalign.interventions.evaluation import score_text
    from brainalign.interventions.neurons import NeuronSet, edit_neurons
    from brainalign.models.registry import load_model
    from brainalign.provenance import file_sha256, provenance_block

    if (text_path is None) == (language is None):
        raise click.UsageError("give exactly one of --text FILE or --udhr LANGUAGE")
    if (mode in ("scale", "add")) != (value is not None):
        raise click.UsageError(f"--mode {mode} takes --value (the factor for scale, the constant "
                               "for add)" if value is None else
                               f"--value is used by --mode scale or add, not {mode}")
    from brainalign.cli import check_device, check_out_file, declare_layout_file

    device = check_device(device)
    check_out_file(out)
    text = read_prose(text_path) if text_path else read_udhr(language).text()
    try:
        neuron_set = NeuronSet.from_dict(json.loads(neurons_path.read_text()))
    except json.JSONDecodeError as err:
        raise click.ClickException(f"--neurons {neurons_path}: not valid JSON ({err})") from None
    except ValueError as err:
        raise click.ClickException(f"--neurons {neurons_path}: {err}") from None
    if neuron_set.size == 0:
        raise click.ClickException(f"--neurons {neurons_path}: the neuron set is empty; nothing "
                                   "would be edited")
    try:
        loaded = load_model(model_name, device=device)
    except (UnknownModelError, ModelNotInstalledError) as err:
        raise click.ClickException(str(err)) from None
    declare_layout_file(loaded, layout_path)
    try:  # every site must exist and every unit lie inside its site, before any scoring
        neuron_set.sites(loaded.model)
    except ValueError as err:
        raise click.ClickException(f"--neurons {neurons_path}: {err}") from None
    options = dict(kind=loaded.kind, max_tokens=max_tokens, window=window, stride=stride)
    intact = score_text(loaded.model, loaded.tokenizer, text, **options)
    with edit_neurons(loaded.model, neuron_set, mode, **({} if value is None else {"value": value})):
        edited = score_text(loaded.model, loaded.tokenizer, text, **options)
    click.echo(f"{neuron_set.size} neurons, {mode}{'' if mode in ('zero', 'keep_only') else f' {value:g}'}, "
               f"{intact.n_tokens} tokens")
    click.echo(f"intact  perplexity {intact.perplexity:12.3f}  top-1 accuracy {intact.accuracy:.3f}")
    click.echo(f"edited  perplexity {edited.perplexity:12.3f}  top-1 accuracy {edited.accuracy:.3f}  "
               f"(ratio {edited.perplexity / intact.perplexity:.3f})")
    if out is not None:
        document = {"intact": intact.to_dict(), "edited": edited.to_dict(),
                    "ppl_ratio": edited.perplexity / intact.perplexity,
                    "provenance": provenance_block(model=loaded.provenance, mode=mode, value=value,
                                                   neurons=str(neurons_path),
                                                   neurons_sha256=file_sha256(neurons_path),
                                                   text=str(text_path) if text_path else f"udhr:{language}",
                                                   max_tokens=max_tokens, window=window, stride=stride)}
        from brainalign.cli import write_text_atomic

        write_text_atomic(out, json.dumps(document, indent=1))
