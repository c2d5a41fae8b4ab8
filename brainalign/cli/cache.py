"""``brainalign cache info`` and ``brainalign cache clear``: what brainalign keeps on disk.

Two kinds of cache, both safe to delete (they are rebuilt when next needed):

* brainalign's cache folder (:func:`brainalign.models.registry.cache_dir`,
  ``$BRAINALIGN_CACHE`` or ``~/.cache/brainalign``): its ``models/`` sub-folder holds the
  registry's GGUF models dequantised to float32 safetensors (``<name>-<sha256[:12]>/``) and
  split GGUF files joined into one. Other sub-folders (the UDHR corpus, analysis outputs)
  are listed but never cleared here.
* a study output's ``cache/`` folder: one ``<stage>-<hash>/`` folder per pipeline stage
  (:class:`brainalign.pipeline.cache.StageCache`); a rerun recomputes what is missing.

Only the entries listed by ``info`` under those two folders are ever deleted; a symbolic
link is removed as a link, never followed.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import click

from brainalign.cli import main
from brainalign.models.registry import cache_dir
from brainalign.pipeline.config import STAGE_DEPENDENCIES

#: ``<stage>-<config hash>`` and the private ``.<stage>-<config hash>.partial-<pid>`` folder
#: a stage is built in.
STAGE_FOLDER = re.compile(
    rf"^\.?({'|'.join(STAGE_DEPENDENCIES)})-[0-9a-f]+(\.partial-\d+)?$")


@dataclass
class Entry:
    """One file or folder in a cache: its path, size in bytes, what it is, and whether
    ``brainalign cache clear`` may delete it."""

    path: Path
    size: int
    what: str
    clearable: bool


def disk_size(path: Path) -> int:
    """Bytes under ``path`` (files' apparent sizes; symbolic links are not followed)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # removed meanwhile (another process)
                pass
    return total


def human(size: int) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units)."""
    if size < 1000:
        return f"{size} B"
    value = size / 1000
    for unit in ("kB", "MB"):
        if value < 1000:
            return f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _model_entry(path: Path) -> Entry:
    if ".partial" in path.name:
        what = "unfinished write (interrupted)"
    elif path.is_dir() and (path / "complete.json").exists():
        what = "model dequantised to float32"
    elif path.suffix == ".gguf":
        what = "GGUF joined from its split parts"
    else:
        what = "model cache file"
    return Entry(path, disk_size(path), what, clearable=True)


def brainalign_entries(root: Path | None = None) -> list[Entry]:
    """Entries of brainalign's cache folder: each item of ``models/`` (clearable) and each
    other top-level item (listed only)."""
    root = cache_dir() if root is None else root
    if not root.is_dir():
        return []
    entries = []
    models = root / "models"
    listed = models.is_dir() and not models.is_symlink()
    if listed:
        entries += [_model_entry(path) for path in sorted(models.iterdir())]
    for path in sorted(root.iterdir()):
        if not (listed and path == models):
            entries.append(Entry(path, disk_size(path), "not brainalign's models (kept)",
                                 clearable=False))
    return entries


def study_entries(study_dir: Path) -> list[Entry]:
    """Entries of a study output's ``cache/`` folder: stage folders (clearable) and anything
    else (listed only)."""
    folder = study_dir / "cache"
    if not folder.is_dir() or folder.is_symlink():
        return []
    entries = []
    for path in sorted(folder.iterdir()):
        match = STAGE_FOLDER.match(path.name)
        if match and path.is_dir() and not path.is_symlink():
            state = ("unfinished (interrupted)" if match.group(2)
                     else "complete" if (path / "complete.json").exists() else "incomplete")
            entries.append(Entry(path, disk_size(path), f"stage {match.group(1)}, {state}",
                                 clearable=True))
        else:
            entries.append(Entry(path, disk_size(path), "not a stage folder (kept)",
                                 clearable=False))
    return entries


def _print_entries(title: str, folder: Path, entries: list[Entry], clear_hint: str) -> None:
    click.echo(f"{title}  {folder}")
    if not entries:
        click.echo("  (empty)" if folder.exists() else "  (does not exist)")
        return
    width = max(len(str(e.path.relative_to(folder))) for e in entries)
    for entry in entries:
        click.echo(f"  {str(entry.path.relative_to(folder)).ljust(width)}  "
                   f"{human(entry.size):>9}  {entry.what}")
    clearable = sum(e.size for e in entries if e.clearable)
    click.echo(f"  {'total'.ljust(width)}  {human(sum(e.size for e in entries)):>9}  "
               f"({human(clearable)} freed by `{clear_hint}`)")


def _study_dir(path: str) -> Path:
    study_dir = Path(path)
    if study_dir.name == "cache" and not (study_dir / "cache").exists():
        raise click.UsageError(f"give the study's output folder ({study_dir.parent}), "
                               f"not its cache folder")
    return study_dir


@main.group("cache")
def cache_group() -> None:
    """What brainalign caches on disk, and clearing it.

    brainalign's cache folder ($BRAINALIGN_CACHE, default ~/.cache/brainalign) keeps the
    dequantised models under models/; each study output keeps its stages under cache/.
    Both are rebuilt when next needed."""


@cache_group.command("info", short_help="Sizes of the model cache and of a study's stages.")
@click.argument("study_dir", required=False, type=click.Path(exists=True, file_okay=False))
def cache_info(study_dir: str | None) -> None:
    """Sizes of brainalign's model cache and, with STUDY_DIR (a study's output folder), of
    its cached stages."""
    root = cache_dir()
    _print_entries("brainalign cache", root, brainalign_entries(root),
                   "brainalign cache clear --models")
    click.echo("  (set BRAINALIGN_CACHE to move it)")
    if study_dir is not None:
        folder = _study_dir(study_dir)
        _print_entries("study cache", folder / "cache", study_entries(folder),
                       f"brainalign cache clear {study_dir}")


@cache_group.command("clear", short_help="Delete a study's stages and/or the models.")
@click.argument("study_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--models", "models", is_flag=True,
              help="Clear the dequantised models in brainalign's cache folder.")
@click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(study_dir: str | None, models: bool, yes: bool) -> None:
    """Delete the cached stages of STUDY_DIR (a study's output folder) and, with --models,
    brainalign's dequantised models. Nothing outside those folders is touched; the next
    run rebuilds what it needs."""
    if study_dir is None and not models:
        raise click.UsageError("nothing to clear: give a study's output folder and/or --models")
    entries: list[Entry] = []
    if models:
        entries += [e for e in brainalign_entries() if e.clearable]
    if study_dir is not None:
        entries += [e for e in study_entries(_study_dir(study_dir)) if e.clearable]
    if not entries:
        click.echo("nothing to clear")
        return
    total = sum(e.size for e in entries)
    for entry in entries:
        click.echo(f"  {human(entry.size):>9}  {entry.path}  ({entry.what})")
    if not yes:
        click.confirm(f"delete these {len(entries)} entries ({human(total)})?", abort=True)
    for entry in entries:
        if entry.path.is_symlink() or not entry.path.is_dir():
            entry.path.unlink(missing_ok=True)
        else:
            shutil.rmtree(entry.path)
    if study_dir is not None:
        folder = Path(study_dir) / "cache"
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    click.echo(f"freed {human(total)} ({len(entries)} entries)")
