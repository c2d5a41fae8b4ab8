"""``brainalign bids info PATH``: what a BIDS / fMRIPrep dataset holds for a study.

Prints subjects x tasks x runs with each run's TR, volumes, StartTime (the slice-timing
reference of its sidecar) and confounds table, the files that are missing, and, with
``--timing``, the story, story run and onset of every run and
the runs whose volumes do not cover their story. Errors (no such folder, a space the
derivatives lack, a run without its story) are one line naming the file.
"""

from __future__ import annotations

import click

from brainalign.cli import main


def timing_check(words, onset_s: float, n_volumes: int, tr_s: float) -> str:
    """The check column of a run: ``ok``, or ``MISMATCH:`` and each way the run's words fall
    outside its scan (``words``: the story run's, in story time; ``onset_s``: the scan
    clock of story time 0)."""
    problems = [] if words else ["no words in this story run"]
    if words and onset_s + words[0].onset_s < 0:
        problems.append(f"words start at {onset_s + words[0].onset_s:.1f} s, before the first "
                        "volume")
    if words and onset_s + words[-1].offset_s > n_volumes * tr_s:
        problems.append(f"words end at {onset_s + words[-1].offset_s:.1f} s, {n_volumes} "
                        f"volumes end at {n_volumes * tr_s:.1f} s")
    return "MISMATCH: " + "; ".join(problems) if problems else "ok"


@main.group("bids")
def bids_group() -> None:
    """BIDS / fMRIPrep datasets: what a study would read from them."""


@bids_group.command("info")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--derivatives", default="derivatives/fmriprep", show_default=True,
              help="fMRIPrep's output, absolute or relative to PATH.")
@click.option("--space", default="fsaverage5", show_default=True,
              help="fsaverage5 / fsaverage6 (GIfTI) or a volume space, e.g. "
                   "MNI152NLin2009cAsym.")
@click.option("--res", default=None, help="Volume resolution label (the res- entity).")
@click.option("--task", "tasks", multiple=True, help="Only these tasks (repeatable).")
@click.option("--subject", "subjects", multiple=True, help="Only these subjects (repeatable).")
@click.option("--entity", "entities", multiple=True, metavar="KEY-LABEL",
              help="Only runs whose file names carry this entity, e.g. acq-lo (repeatable).")
@click.option("--timing", type=click.Choice(["narratives", "lebel2023", "lepetitprince"]),
              default=None, help="Also pair each run with its story in this timing layout.")
@click.option("--onset", type=float, default=None,
              help="lebel2023 / lepetitprince: seconds from a run's first volume to its story's "
                   "start, for runs without an events file.")
def bids_info(path, derivatives, space, res, tasks, subjects, entities, timing, onset) -> None:
    """Subjects x runs x stories, TR and volumes, missing files, of the dataset at PATH."""
    from brainalign.brain.bids import BidsError, discover_bids
    from brainalign.stimuli.readers import StoryFormatError
    from brainalign.stimuli.timing import StimulusTimingError, read_stimulus_timing

    try:
        bad = [e for e in entities if "-" not in e.strip("-")]
        if bad:
            raise click.UsageError(f"--entity {bad[0]!r}: expected KEY-LABEL, e.g. acq-lo")
        dataset = discover_bids(path, derivatives=derivatives, space=space, res=res,
                                tasks=list(tasks) or None, subjects=list(subjects) or None,
                                entities=dict(e.split("-", 1) for e in entities))
        for line in dataset.describe():
            click.echo(line)
        if timing is None:
            return
        options = {} if onset is None else {"onset_s": onset}
        stimulus = read_stimulus_timing(timing, path, **options)
    except (BidsError, StimulusTimingError, StoryFormatError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"stories ({timing} layout): " + ", ".join(
        f"{name} ({story.n_runs} run(s), {len(story.words)} words)"
        for name, story in stimulus.stories.items()))
    click.echo(f"{'run':<34} {'story':<16} {'story run':>9} {'onset (s)':>9}  scan check")
    for run in dataset.runs:
        try:
            entry = stimulus.lookup(run.subject, run.task, run.run)
        except StimulusTimingError:
            click.echo(f"{run.label:<34} NO STORY: no timing entry for this run")
            continue
        story = stimulus.stories[entry.story]
        check = timing_check(story.run_words(entry.story_run), entry.onset_s, run.n_volumes(),
                             run.tr_s)
        click.echo(f"{run.label:<34} {entry.story:<16} {entry.story_run + 1:>9} "
                   f"{entry.onset_s:>9.2f}  {check}")
