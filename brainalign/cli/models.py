"""``brainalign models``: the offline model registry and what is installed."""

from __future__ import annotations

import click

from brainalign.cli import main
from brainalign.models.registry import list_models


@main.command("models")
def models_command() -> None:
    """List the registry's models: name, aliases, kind, variant (base, instruct...),
    quantisation, whether each is installed, and the original Hugging Face id."""
    rows = list_models()
    for index, row in enumerate(rows):
        if index:
            click.echo("")
        default = f"  (default {row['default']} model)" if row["default"] else ""
        state = "yes" if row["installed"] else f"no; install with: {row['install']}"
        click.echo(f"{row['name']}{default}")
        for label, value in (
            ("aliases", ", ".join(row["aliases"]) or "-"),
            ("kind", f"{row['kind']} ({row['architecture']})"),
            ("variant", row["variant"]),
            ("quantisation", row["quantisation"]),
            ("installed", state),
            ("hf id", row["hf_id"]),
            ("about", row["description"]),
        ):
            click.echo(f"  {label:<13} {value}")
