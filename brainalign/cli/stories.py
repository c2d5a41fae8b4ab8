"""``brainalign story info``: inspect story timing files, and check them against a scan
(a thin layer over brainalign.stimuli)."""

from __future__ import annotations

import click

from brainalign.cli import main
from brainalign.stimuli import StoryFormatError, bundled_story, load_story


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


@main.group("story")
def story_group() -> None:
    """Inspect story timing files (TextGrid, Gentle JSON, TSV/CSV, text, story directory)."""


@story_group.command("info")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=True))
@click.option("--tier", default=None, help="TextGrid word tier (default: by name/heuristics).")
@click.option("--words-per-s", type=float, default=None,
              help="Speech rate for plain text, in words per second.")
@click.option("--syllables-per-s", type=float, default=None,
              help="Speech rate for plain text, in syllables per second.")
@click.option("--tr", "tr_s", type=float, default=None,
              help="Check the words against a scan: its repetition time in seconds.")
@click.option("--n-volumes", type=int, multiple=True,
              help="The scan's volumes, once per run (with --tr and --first-volume-s).")
@click.option("--first-volume-s", type=float, multiple=True,
              help="Stimulus time (s, on the words' clock) of the scan's first volume, once "
                   "per run or once for all runs (e.g. 20 when the first 10 volumes of a "
                   "2 s TR were discarded).")
def story_info(paths: tuple[str, ...], tier: str | None, words_per_s: float | None,
               syllables_per_s: float | None, tr_s: float | None, n_volumes: tuple[int, ...],
               first_volume_s: tuple[float, ...]) -> None:
    """Words, runs, durations and speech rate of a story, and its scan against the words.

    PATHS: one file or story directory, or several files read as consecutive runs.
    Without PATHS, the bundled story. The scan is the story's own (story directories),
    or the one given by --tr, --n-volumes and --first-volume-s; runs with words before
    the first volume or after the last are flagged.
    """
    options = {key: value for key, value in (("tier", tier), ("words_per_s", words_per_s),
                                             ("syllables_per_s", syllables_per_s))
               if value is not None}
    scan_given = [tr_s is not None, bool(n_volumes), bool(first_volume_s)]
    if any(scan_given) and not all(scan_given):
        raise click.UsageError("a scan needs all of --tr, --n-volumes and --first-volume-s")
    try:
        story = load_story(list(paths), **options) if paths else bundled_story()
        if all(scan_given):
            story = story.with_scan(tr_s, n_volumes, first_volume_s=(  # one for all runs
                first_volume_s[0] if len(first_volume_s) == 1 else first_volume_s),
                allow_words_outside_scan=True)  # flagged below instead
    except (StoryFormatError, TypeError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    rows = story.run_summary()
    n_words = len(story.words)
    speech_s = sum(row["speech_s"] for row in rows)
    click.echo(f"story    {story.name}")
    click.echo(f"source   {story.source}")
    click.echo(f"words    {n_words} in {story.n_runs} run(s)")
    if story.tr_s is not None and story.n_volumes is not None:
        volumes = " + ".join(str(n) for n in story.n_volumes)
        firsts = ("unknown" if story.first_volume_s is None
                  else ", ".join(f"{t:g}" for t in story.first_volume_s) + " s")
        click.echo(f"scan     TR {story.tr_s:g} s, {volumes} volumes, first volume at {firsts}")
    else:
        click.echo("scan     none (give --tr, --n-volumes and --first-volume-s to check one)")
    rate = f"{n_words / speech_s:.2f} words/s" if speech_s > 0 else "-"
    click.echo(f"speech   {speech_s:.1f} s, {rate}")
    interpolated = story.metadata.get("interpolated_words", [])
    if interpolated:
        click.echo(f"interpolated words (unaligned in the source): {len(interpolated)}")
    click.echo("")
    click.echo(f"{'run':>3}  {'words':>6}  {'first onset s':>13}  {'last offset s':>13}  "
               f"{'speech s':>9}  {'words/s':>7}  {'scan s':>8}  {'first vol s':>11}  "
               f"{'scan end s':>10}  {'outside':>7}")
    for row in rows:
        rate = "-" if row["words_per_s"] is None else f"{row['words_per_s']:.2f}"
        click.echo(f"{row['run'] + 1:>3}  {row['n_words']:>6}  "
                   f"{_seconds(row['first_onset_s']):>13}  {_seconds(row['last_offset_s']):>13}  "
                   f"{row['speech_s']:>9.3f}  {rate:>7}  {_seconds(row['scan_s']):>8}  "
                   f"{_seconds(row['first_volume_s']):>11}  {_seconds(row['scan_end_s']):>10}  "
                   f"{_count(row['n_outside_scan']):>7}")
    for row in rows:
        if row["n_outside_scan"]:
            click.echo(f"MISMATCH run {row['run'] + 1}: {row['n_outside_scan']} word(s) outside "
                       f"the scan: words {row['first_onset_s']:.3f} .. "
                       f"{row['last_offset_s']:.3f} s, scan {row['first_volume_s']:.3f} .. "
                       f"{row['scan_end_s']:.3f} s; check the first-volume time and the "
                       "volume count")
