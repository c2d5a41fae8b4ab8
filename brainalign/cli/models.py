"""``brainalign models``: the offline model registry and what is installed."""

from __future__ import annotations

import click

from brainalign.cli import main
from brainalign.models.registry import list_models


@main.command("models")
def models_command() -> None:
    """List the registry's models and whether each is installed."""
    rows = list_models()
    width = max(len(r["name"]) for r in rows)
    for row in rows:
        state = "installed" if row["installed"] else f"not installed ({row['install']})"
        click.echo(f"{row['name']:<{width}}  {row['kind']:<7}  {state}")
        click.echo(f"{'':<{width}}  {row['description']}")
