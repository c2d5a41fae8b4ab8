"""Command-line interface: a thin layer over the Python API (click).

Each stage keeps its commands in its own module here and registers them on :data:`main`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Callable

import click


class _TerminalHandler(logging.Handler):
    """Log records to the terminal's stderr, as it is when each record arrives (click's
    test runner swaps it between invocations)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


def configure_logging(verbose: int) -> Callable[[], None]:
    """Terminal log level: warnings only by default, INFO with ``-v``, DEBUG with ``-vv``.

    The level is set on the terminal handler itself, not only on the root logger: a study
    raises the ``brainalign`` logger to INFO for its ``study.log``, and those records must
    not reach the terminal between the progress bars unless asked for. Returns a function
    that undoes this (for commands run in-process, as in tests).
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger()
    previous_level = root.level
    handler = _TerminalHandler(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(previous_level)

    return restore


@click.group()
@click.version_option(package_name="brainalign")
@click.option("-v", "--verbose", count=True,
              help="More log output: -v info, -vv debug (default: warnings only).")
def main(verbose: int) -> None:
    """brainalign: study a language model the way neuroscience studies a brain."""
    click.get_current_context().call_on_close(configure_logging(verbose))


#: Modules under brainalign.cli that each add commands to ``main`` when imported.
COMMAND_MODULES = ("models", "stories", "study", "record", "patterns", "lesion", "cache")

for _module in COMMAND_MODULES:
    importlib.import_module(f"brainalign.cli.{_module}")
