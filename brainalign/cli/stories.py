"""``brainalign story``: inspect story timing files (a thin layer over brainalign.stimuli)."""

from __future__ import annotations

import click

from brainalign.cli import main
from brainalign.stimuli import StoryFormatError, bundled_story, load_story


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


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
def story_info(paths: tuple[str, ...], tier: str | None, words_per_s: float | None,
               syllables_per_s: float | None) -> None:
    """Words, runs, durations and speech rate of a story.

    PATHS: one file or story directory, or several files read as consecutive runs.
    Without PATHS, the bundled story.
    """
    options = {key: value for key, value in (("tier", tier), ("words_per_s", words_per_s),
                                             ("syllables_per_s", syllables_per_s))
               if value is not None}
    try:
        story = load_story(list(paths), **options) if paths else bundled_story()
    except (StoryFormatError, TypeError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    rows = story.run_summary()
    n_words = len(story.words)
    speech_s = sum(row["speech_s"] for row in rows)
    click.echo(f"story    {story.name}")
    click.echo(f"source   {story.source}")
    click.echo(f"words    {n_words} in {story.n_runs} run(s)")
    if story.tr_s is not None:
        volumes = " + ".join(str(n) for n in story.n_volumes)
        click.echo(f"scan     TR {story.tr_s:g} s, {volumes} volumes")
    rate = f"{n_words / speech_s:.2f} words/s" if speech_s > 0 else "-"
    click.echo(f"speech   {speech_s:.1f} s, {rate}")
    interpolated = story.metadata.get("interpolated_words", [])
    if interpolated:
        click.echo(f"interpolated words (unaligned in the source): {len(interpolated)}")
    click.echo("")
    click.echo(f"{'run':>3}  {'words':>6}  {'first onset s':>13}  {'last offset s':>13}  "
               f"{'speech s':>9}  {'words/s':>7}  {'scan s':>8}")
    for row in rows:
        rate = "-" if row["words_per_s"] is None else f"{row['words_per_s']:.2f}"
        click.echo(f"{row['run'] + 1:>3}  {row['n_words']:>6}  "
                   f"{_seconds(row['first_onset_s']):>13}  {_seconds(row['last_offset_s']):>13}  "
                   f"{row['speech_s']:>9.3f}  {rate:>7}  {_seconds(row['scan_s']):>8}")
