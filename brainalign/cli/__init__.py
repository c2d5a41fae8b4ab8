"""Command-line interface: a thin layer over the Python API (click).

Each stage keeps its commands in its own module here and registers them on :data:`main`.
"""

from __future__ import annotations

import importlib
import logging

import click


@click.group()
@click.version_option(package_name="brainalign")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """brainalign: study a language model the way neuroscience studies a brain."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")


#: Modules under brainalign.cli that each add commands to ``main`` when imported.
COMMAND_MODULES = ("models", "stories", "study", "record", "patterns", "lesion")

for _module in COMMAND_MODULES:
    importlib.import_module(f"brainalign.cli.{_module}")
