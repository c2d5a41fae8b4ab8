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


def check_device(device: str | None, option: str = "--device") -> str | None:
    """``device`` checked by :func:`brainalign.models.registry.check_device`, a usage error
    (one line, exit 2) naming ``option`` when torch cannot compute on it."""
    from brainalign.models.registry import check_device as check

    try:
        return check(device, what=option)
    except ValueError as err:
        raise click.BadParameter(str(err).removeprefix(f"{option} "), param_hint=option) from None


def check_out_file(path, option: str = "--out") -> None:
    """Refuse, before any work, an output file whose folder is missing or not writable."""
    import os
    from pathlib import Path

    if path is None:
        return
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a directory; give a file path", param_hint=option)
    if parent.exists() and not parent.is_dir():
        raise click.BadParameter(f"{str(parent)!r} (the folder of {str(path)!r}) is a file, not "
                                 "a folder", param_hint=option)
    if not parent.is_dir():
        raise click.BadParameter(f"folder {str(parent)!r} does not exist; create it first",
                                 param_hint=option)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise click.BadParameter(f"folder {str(parent)!r} is not writable", param_hint=option)


def check_out_dir(path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that cannot be created or written: a
    file in its place, or a nearest existing parent folder that is not writable."""
    import os
    from pathlib import Path

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"{str(path)!r} exists and is not a folder", param_hint=option)
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise click.BadParameter(f"{str(existing)!r} (a parent of {str(path)!r}) is not a folder",
                                 param_hint=option)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.BadParameter(f"folder {str(existing)!r} is not writable", param_hint=option)


#: ``--layout FILE``: where a model's sites are, for models not recognised automatically.
layout_option = click.option(
    "--layout", "layout_path", default=None, type=click.Path(exists=True, dir_okay=False),
    help="TOML/JSON file declaring where the sites are (models not recognised "
    "automatically; see brainalign.models.sites).")


def declare_layout_file(loaded, layout_path) -> None:
    """Give ``loaded`` the layout of ``--layout`` (if given), for its recordings and edits."""
    if layout_path is None:
        return
    from brainalign.models.sites import load_layout

    try:
        loaded.layout = load_layout(layout_path)
    except ValueError as err:
        raise click.ClickException(f"--layout {layout_path}: {err}") from None


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, so that a failure
    leaves no partial file."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.group()
@click.version_option(package_name="brainalign")
@click.option("-v", "--verbose", count=True,
              help="More log output: -v info, -vv debug (default: warnings only).")
def main(verbose: int) -> None:
    """brainalign: study a language model the way neuroscience studies a brain."""
    click.get_current_context().call_on_close(configure_logging(verbose))


#: Modules under brainalign.cli that each add commands to ``main`` when imported.
COMMAND_MODULES = ("models", "stories", "study", "record", "patterns", "lesion", "cache",
                   "bids")

for _module in COMMAND_MODULES:
    importlib.import_module(f"brainalign.cli.{_module}")
