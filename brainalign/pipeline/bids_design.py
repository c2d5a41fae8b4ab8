"""A study's design read from a BIDS dataset: which story each run heard, and when.

With ``fmri.source = "bids"``, :func:`bids_design` joins the preprocessed runs that
:func:`brainalign.brain.bids.discover_bids` finds with the stimulus timing of the dataset's
layout (:func:`brainalign.stimuli.timing.read_stimulus_timing`), explicitly and with one
check per way it goes wrong:

- every run must have a timing entry (its story, the story's run, its onset), else an error
  names the run's file ("a run without its story");
- every subject must present the same story runs, each once, in runs of the same volume
  count and onset as the first subject's (a wrong count or onset shifts every feature);
- a story's runs must all be scanned; its TR must be ``stories.tr_s``;
- with a confound strategy, every run needs its confounds table.

The stories then carry the scan of the data (``n_volumes`` per story run,
``first_volume_s = -onset + volume time``), their runs in story order, so that each story
is recorded once per model and its time courses serve every subject. Each subject's runs
are listed in that same order.

The volume time is the moment within each volume that its data stand for, in seconds after
the volume's acquisition starts: the ``StartTime`` of the run's sidecar (fMRIPrep's
slice-timing reference: half the acquisition with its defaults), else
``fmri.bids_slice_time_ref`` times the TR, else 0 with a warning, since a volume that stands
for mid-acquisition but is taken at its start shifts every feature by half a TR. It must
agree across subjects like the onsets, and is written in :meth:`BidsDesign.describe`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from brainalign.pipeline.config import ConfigError
from brainalign.stimuli.timing import run_sort_key

logger = logging.getLogger(__name__)


@dataclass
class BidsDesign:
    """The runs of a BIDS study in the stories' run order.

    Attributes
    ----------
    dataset : brainalign.brain.bids.BidsDataset
    timing : brainalign.stimuli.timing.StimulusTiming
    stories : list of Story
        With their scans (TR, volumes and first-volume time per story run).
    subjects : list of str
    runs : dict subject -> list of BidsRun
        Each subject's runs, one per story run, stories in order.
    story_of_run : list of int
        For each run of that order, the index of its story (leave-one-story-out groups).
    volume_times : list of (float, str)
        For each run of that order, the volume time (s after each volume's acquisition
        start; see the module doc) and where it came from.
    """

    dataset: object
    timing: object
    stories: list
    subjects: list
    runs: dict
    story_of_run: list
    volume_times: list

    def describe(self) -> dict:
        """What the study read, for provenance: files per subject and run, onsets, TR."""
        first = self.runs[self.subjects[0]]
        return {
            "bids_root": str(self.dataset.root), "derivatives": str(self.dataset.derivatives),
            "space": self.dataset.space, "res": self.dataset.res,
            "timing_layout": self.timing.layout, "subjects": list(self.subjects),
            "runs": [{"story": s.name, "story_run": k, "task": run.task, "run": run.run,
                      "n_volumes": s.n_volumes[k], "first_volume_s": s.first_volume_s[k],
                      "tr_s": run.tr_s, "volume_time_s": self.volume_times[i][0],
                      "volume_time_source": self.volume_times[i][1]}
                     for i, ((s, k), run) in enumerate(zip(self.story_runs(), first))],
            "files": {sub: [run.bold for run in runs] for sub, runs in self.runs.items()},
            "missing": list(self.dataset.missing),
        }

    def story_runs(self) -> list[tuple]:
        """(story, story run) of each run, in order."""
        return [(story, k) for story in self.stories for k in range(story.n_runs)]


def _timing_options(layout: str, fmri: dict, tasks: list[str]) -> dict:
    onsets = fmri["stimulus_onset_s"]
    if layout == "narratives":
        if onsets:
            raise ConfigError("fmri.stimulus_onset_s is not used by the narratives layout, "
                              "whose onsets come from each run's events file; remove it")
        return {"tasks": tasks}
    options = {"onset_s": float(onsets[0])} if onsets else {}
    if layout == "lebel2023":
        options["tasks"] = tasks
    return options


def volume_time(run, slice_time_ref: float | None) -> tuple[float, str]:
    """(seconds after each volume's acquisition start that its data stand for, where that
    came from) for a :class:`~brainalign.brain.bids.BidsRun`: its sidecar's ``StartTime``,
    else ``slice_time_ref`` (fraction of the TR), else 0."""
    if run.start_time_s is not None:
        if slice_time_ref is not None and abs(slice_time_ref * run.tr_s - run.start_time_s) > 1e-3:
            raise ConfigError(f"{run.image}: its sidecar's StartTime is {run.start_time_s} s, but "
                              f"fmri.bids_slice_time_ref = {slice_time_ref} puts each volume at "
                              f"{slice_time_ref * run.tr_s:g} s; remove the key (the sidecar "
                              "is read) or make them agree")
        return run.start_time_s, "StartTime of the run's sidecar"
    if slice_time_ref is not None:
        return slice_time_ref * run.tr_s, "fmri.bids_slice_time_ref"
    return 0.0, "none: no StartTime in the sidecar, fmri.bids_slice_time_ref unset"


def bids_design(config: dict) -> BidsDesign:
    """Discover a BIDS study's runs and pair them with its stories (see the module doc).

    Raises
    ------
    ConfigError
        One line naming the file for each problem listed in the module docstring, and the
        discovery's and timing adapters' own errors.
    """
    from brainalign.brain.bids import BidsError, discover_bids
    from brainalign.stimuli.timing import StimulusTimingError, read_stimulus_timing

    fmri = config["fmri"]
    tr_s = float(config["stories"]["tr_s"])
    slice_time_ref = (float(fmri["bids_slice_time_ref"][0]) if fmri["bids_slice_time_ref"]
                      else None)
    try:
        dataset = discover_bids(fmri["bids"], derivatives=fmri["bids_derivatives"] or None,
                                space=fmri["bids_space"], res=fmri["bids_res"] or None,
                                tasks=fmri["bids_tasks"] or None,
                                subjects=fmri["bids_subjects"] or None,
                                entities=dict(e.split("-", 1) for e in fmri["bids_entities"]))
        timing = read_stimulus_timing(fmri["timing_layout"], fmri["bids"],
                                      **_timing_options(fmri["timing_layout"], fmri,
                                                        dataset.tasks))
    except (BidsError, StimulusTimingError) as err:
        raise ConfigError(str(err)) from None
    # each subject's runs keyed by the story run they present
    presented: dict[str, dict[tuple[str, int], object]] = {}
    for run in dataset.runs:
        try:
            entry = timing.lookup(run.subject, run.task, run.run)
        except StimulusTimingError as err:
            raise ConfigError(f"{run.image}: {err}") from None
        key = (entry.story, entry.story_run)
        mine = presented.setdefault(run.subject, {})
        if key in mine:
            raise ConfigError(f"{run.image} and {mine[key].image} both present story "
                              f"{entry.story!r} run {entry.story_run + 1}; keep one (by "
                              "fmri.bids_entities, e.g. [\"acq-lo\"], or fmri.bids_tasks) or "
                              "average the repeats first")
        mine[key] = run
        if abs(run.tr_s - tr_s) > 1e-6:
            raise ConfigError(f"{run.image}: TR {run.tr_s} s (from {run.tr_source}) but "
                              f"stories.tr_s = {tr_s}; set stories.tr_s = {run.tr_s}")
        if fmri_needs_confounds(config) and run.confounds is None:
            raise ConfigError(f"{run.image}: no confounds file beside it, but "
                              f"confounds.strategy = {config['confounds']['strategy']}; add "
                              "the fMRIPrep confounds table or set confounds.strategy = []")
    subjects = dataset.subjects
    reference = presented[subjects[0]]
    order: list[str] = []
    for story, _ in sorted(reference, key=lambda key: (
            min((r.task, run_sort_key(r.run)) for (s, _), r in reference.items()
                if s == key[0]), key[1])):
        if story not in order:
            order.append(story)
    stories, story_of_run, keys, volume_times = [], [], [], []
    for index, name in enumerate(order):
        story = timing.stories[name]
        scanned = sorted(k for s, k in reference if s == name)
        if scanned != list(range(story.n_runs)):
            raise ConfigError(f"story {name!r} has {story.n_runs} run(s) in its timing but "
                              f"sub-{subjects[0]}'s fMRI presents run(s) "
                              f"{[k + 1 for k in scanned]}; every run of a story must be scanned")
        volumes, first = [], []
        for k in range(story.n_runs):
            run = reference[(name, k)]
            volumes.append(run.n_volumes())
            volume_times.append(volume_time(run, slice_time_ref))
            first.append(timing.first_volume_s(run.subject, run.task, run.run)
                         + volume_times[-1][0])
            keys.append((name, k))
            story_of_run.append(index)
        try:
            stories.append(story.with_scan(tr_s, volumes, first_volume_s=first,
                                           allow_words_outside_scan=fmri[
                                               "allow_words_outside_scan"]))
        except ValueError as err:
            files = ", ".join(reference[(name, k)].image for k in range(story.n_runs))
            raise ConfigError(f"{files}: {err} (fmri.allow_words_outside_scan = true accepts "
                              "words outside the scan)") from None
    runs = {}
    for subject in subjects:
        mine = presented[subject]
        absent = [key for key in keys if key not in mine]
        if absent:
            name, k = absent[0]
            raise ConfigError(f"sub-{subject} has no fMRI run of story {name!r} run {k + 1} "
                              f"(sub-{subjects[0]}: {reference[absent[0]].image}); exclude "
                              "the subject with fmri.bids_subjects")
        extra = sorted(set(mine) - set(keys))
        if extra:
            raise ConfigError(f"{mine[extra[0]].image} presents story {extra[0][0]!r} run "
                              f"{extra[0][1] + 1}, which sub-{subjects[0]} does not have")
        runs[subject] = [mine[key] for key in keys]
        for (story, k), run in zip([(s, k) for s in stories for k in range(s.n_runs)],
                                   runs[subject]):
            if subject == subjects[0]:
                continue
            n = run.n_volumes()
            if n != story.n_volumes[k]:
                raise ConfigError(f"{run.image}: {n} volumes, but story {story.name!r} run "
                                  f"{k + 1} was scanned with {story.n_volumes[k]} in "
                                  f"{reference[(story.name, k)].image}; the study needs the "
                                  "same scan for every subject")
            at, _ = volume_time(run, slice_time_ref)
            expected_at = volume_times[keys.index((story.name, k))][0]
            if abs(at - expected_at) > 1e-3:
                raise ConfigError(f"{run.image}: each volume stands for {at:g} s after its "
                                  f"acquisition starts, but {expected_at:g} s in "
                                  f"{reference[(story.name, k)].image} (StartTime in the "
                                  "sidecars); the study needs the same timing for every "
                                  "subject")
            first = timing.first_volume_s(run.subject, run.task, run.run)
            expected = story.first_volume_s[k] - expected_at
            if abs(first - expected) > 1e-6:
                raise ConfigError(f"{run.image}: the story starts {-first} s after the first "
                                  f"volume, but {-expected} s in "
                                  f"{reference[(story.name, k)].image}; the study needs the "
                                  "same onset for every subject")
    untimed = [run.image for run in runs[subjects[0]] if run.start_time_s is None]
    if untimed and slice_time_ref is None:
        logger.warning(
            "%d run(s) (e.g. %s) have no StartTime in their sidecar and "
            "fmri.bids_slice_time_ref is unset: each volume is taken at the start of its "
            "acquisition. If the data were slice-time corrected (fMRIPrep's default reference "
            "is the middle of the acquisition), set fmri.bids_slice_time_ref = [0.5], or [0] "
            "to state the acquisition start", len(untimed), untimed[0])
    logger.info("BIDS study: %d subjects x %d runs of %d stories (%s, space %s)",
                len(subjects), len(keys), len(stories), timing.layout, dataset.space)
    return BidsDesign(dataset, timing, stories, subjects, runs, story_of_run, volume_times)


def fmri_needs_confounds(config: dict) -> bool:
    """True when the study selects confounds (``confounds.strategy`` not empty)."""
    return bool(config.get("confounds", {}).get("strategy"))


def confound_options(config: dict) -> dict:
    """Keyword arguments of :func:`brainalign.brain.bids.load_run_confounds`."""
    options = dict(config["confounds"])
    strategy = options.pop("strategy")
    return {"strategy": tuple(strategy), **options}
