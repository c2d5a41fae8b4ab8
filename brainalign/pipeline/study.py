"""A whole study from one configuration: every stage, cached, resumable, logged, reported.

:func:`run_study` runs the stages of a study in the order they depend on each other::

    record -> timecourse -> patterns -> fmri -> encoding -> networks -> (interventions)
           -> export (NIfTI / GIfTI / TSV maps) -> report.html -> summary.json

Each cached stage writes into ``<out>/cache/<stage>-<hash>/`` through
:class:`~brainalign.pipeline.cache.StageCache`, keyed on the configuration tables it
depends on (:data:`~brainalign.pipeline.config.STAGE_DEPENDENCIES`): a re-run loads what is
complete and computes the rest, and a change of ``patterns.n_atoms`` reuses the recordings
and time courses. Export, report and summary are rewritten on every run from the cached
stage outputs.

The stages are thin compositions of the package's modules: :mod:`brainalign.record`,
:mod:`brainalign.timecourse`, :mod:`brainalign.simulate` (simulated fMRI with planted
networks) or :mod:`brainalign.brain` (real data), :mod:`brainalign.patterns`,
:mod:`brainalign.encoding` (subjects' fits as Dask units through
:func:`~brainalign.pipeline.scale.map_units`), :mod:`brainalign.networks` (mapping with
spatial nulls; neurons inherit their subgroup's network), :mod:`brainalign.interventions`
(study-B lesion check) and :mod:`brainalign.export`. Recovery against a simulation's
planted truth is scored by :func:`brainalign.simulate.recovery.score_mapping`.

Every run appends structured lines (JSON, one object per line) to ``<out>/study.log``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from brainalign.pipeline.cache import StageCache
from brainalign.pipeline.config import INPUTS_TABLE, SCAN_TABLE, ConfigError, corpus_name
from brainalign.pipeline.inputs import study_inputs
from brainalign.provenance import config_hash, provenance_block

logger = logging.getLogger(__name__)

#: File beside each model's saved Patterns holding its stability curve over
#: ``patterns.stability_k`` (:meth:`Study.stability_curve`).
STABILITY_CURVE = "stability_curve.json"

#: How exported maps of subject averages mark targets that no subject had data for
#: (a viewer shows NaN as empty; 0 would read as a measured r of 0).
NO_DATA = "NaN where no subject was fitted"

#: Cached stages in the order they run.
STAGES = ("record", "timecourse", "corpus", "patterns", "fmri", "encoding", "networks",
          "interventions")

#: Scores of :class:`brainalign.simulate.recovery.RecoveryScores` copied into summaries.
RECOVERY_KEYS = ("accuracy", "auc", "false_positive_share", "best_r", "max_r")


# --------------------------------------------------------------------------- data types

@dataclass
class StageRun:
    """What happened to one stage in one run.

    Attributes
    ----------
    stage : str
    status : {"computed", "cached", "skipped"}
    path : str
        The stage's cache folder ("" when skipped).
    wall_s : float
        Seconds spent in this run (loading a cached stage counts ~0).
    """

    stage: str
    status: str
    path: str
    wall_s: float


@dataclass
class StudySummary:
    """The outcome of :func:`run_study`, also written to ``<out>/summary.json``.

    Attributes
    ----------
    out : str
        The study's output directory.
    wall_s : float
        Wall-clock seconds of the whole run.
    stages : list of StageRun
    recovery : dict
        Simulated fMRI only: ``accuracy`` (mean assignment accuracy against the planted
        truth over spaces and models), and per ``"<model>/<space>"`` every recovery score.
    maps : dict
        ``"<model>/<space>"`` -> {map name: path} of the exported NIfTI / GIfTI / TSV maps.
    tables : dict
        Table name -> path of the exported TSV tables.
    study_b : dict
        The lesion check (empty when ``interventions.study_b`` is false).
    sizes : dict
        Sizes of the study (neurons, TRs, atoms, targets, subjects, permutations...).
    notes : list of str
        Fallbacks and other things a reader should know.
    report : str
        Path of report.html ("" when not written).
    config_hash : str
    group : dict
        ``"<model>/<space>"`` -> measure -> the group map's test and its number of targets
        with p_FWE < ``group.alpha`` (:func:`~brainalign.pipeline.group_stage.group_summary`).
    encoding : dict
        ``"<model>/<space>"`` -> mean held-out r, each band's mean r alone and unique r
        with its FDR-significant targets per subject, and the atoms fitted per fold vs on
        the whole story (:func:`~brainalign.pipeline.bands.encoding_summary`).
    patterns_stability : dict
        ``"<model>"`` -> where its atoms were fitted (``fitted_on``), the means of their seed
        stability (``seed``: matched atom and loading r, subgroup ARI and IoU) and split-half
        stability (``split_half``: the same and the split ``scheme``), and the path of its
        stability curve over ``patterns.stability_k`` (``curve``, "" when none)
        (:meth:`Study.patterns_stability`).
    """

    out: str
    wall_s: float
    stages: list[StageRun]
    recovery: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    study_b: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    report: str = ""
    config_hash: str = ""
    group: dict = field(default_factory=dict)
    encoding: dict = field(default_factory=dict)
    patterns_stability: dict = field(default_factory=dict)

    def stage_status(self) -> dict[str, str]:
        """Stage -> "computed" / "cached" / "skipped"."""
        return {run.stage: run.status for run in self.stages}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rows(self) -> list[tuple[str, str]]:
        """(item, value) rows of the closing summary table."""
        rows = [(f"stage {run.stage}", f"{run.status} ({run.wall_s:.1f} s)")
                for run in self.stages]
        for key, value in self.recovery.items():
            if isinstance(value, dict):
                rows.append((f"recovery {key}", ", ".join(
                    f"{k}={_fmt(value[k])}" for k in ("accuracy", "auc", "best_r") if k in value)))
            else:
                rows.append((f"recovery {key}", _fmt(value)))
        for key, entry in self.encoding.items():
            parts = [f"r={_fmt(entry['r_mean'])}"]
            parts += [f"unique {band}={_fmt(values['r_unique_mean'])}"
                      for band, values in entry.get("bands", {}).items()]
            if "atoms" in entry:
                parts.append(f"atoms per fold {_fmt(entry['atoms']['per_fold_r_mean'])} vs "
                             f"whole story {_fmt(entry['atoms']['whole_story_r_mean'])}")
            rows.append((f"encoding {key}", ", ".join(parts)))
        for key, entry in self.patterns_stability.items():
            parts = [f"{kind.replace('_', '-')} loading r={_fmt(entry[kind]['loading_r_mean'])}"
                     for kind in ("seed", "split_half") if kind in entry]
            rows.append((f"pattern stability {key}", ", ".join(parts)))
        if self.study_b:
            rows.append(("study B lesion", self.study_b.get("verdict", "")))
        rows.append(("report", self.report or "-"))
        rows.append(("wall time", f"{self.wall_s:.1f} s"))
        return rows


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class SubjectFiles:
    """Per-subject files of a study read one at a time: a sequence whose items are loaded
    when indexed or iterated, so that a stage going through the subjects holds one of them.

    ``read`` maps a path to the item; the default reads the (n_tr, n_targets) ``bold``
    matrix of a subject's ``.npz``.
    """

    def __init__(self, paths: list, read: Callable[[Path], Any] | None = None):
        self.paths = list(paths)
        self.read = read or _read_bold

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        return self.read(self.paths[index])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def _read_bold(path: Path) -> np.ndarray:
    with np.load(path) as arrays:
        return arrays["bold"]


@dataclass
class SpaceData:
    """The brain data of one space of a study.

    Attributes
    ----------
    bold : sequence of ndarray, shape (n_tr, n_targets)
        One matrix per subject (real data: a :class:`SubjectFiles`, read when indexed).
    runs : ndarray of int, shape (n_tr,)
    masker : fitted brainalign.brain masker
        Maps over the targets are written through it.
    mask_img : nibabel image or None
        Volume spaces: the target voxels.
    simulation : Simulation or None
        The simulation with its planted truth (simulated fMRI only).
    """

    bold: list
    runs: np.ndarray
    masker: Any
    mask_img: Any = None
    simulation: Any = None


# --------------------------------------------------------------------------- structured log

class _JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message and any ``fields`` extra."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}) or {})
        return json.dumps(entry, default=str)


def _event(message: str, **fields: Any) -> None:
    logger.info(message, extra={"fields": fields})


def read_log(out: str | Path) -> list[dict[str, Any]]:
    """The structured log of a study folder, one dict per line."""
    path = Path(out) / "study.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- helpers

def model_slug(name: str) -> str:
    """A folder-safe label of a model name, hub id or path."""
    tail = Path(str(name).rstrip("/")).name or "model"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in tail)


def study_models(config: dict) -> list[tuple[str, str]]:
    """(slug, name) of every model; slugs are made unique by an index when they clash."""
    names = config["model"]["names"]
    slugs = [model_slug(n) for n in names]
    return [(s if slugs.count(s) == 1 else f"{s}-{i}", n) for i, (s, n) in enumerate(zip(slugs, names))]


def real_masker(fmri: dict) -> Any:
    """An unfitted masker for the real fMRI of ``fmri.source`` (nifti, gifti or roi)."""
    from brainalign.brain import RoiTableMasker, SurfaceMasker, VolumeMasker

    if fmri["source"] == "nifti":
        return VolumeMasker(mask_img=fmri["mask"] or None,
                            resample_to_mask=fmri.get("resample_mask", False))
    return SurfaceMasker() if fmri["source"] == "gifti" else RoiTableMasker()


def _run_labels(stories: list) -> str:
    return ", ".join(f"{s.name}: {s.n_runs}" for s in stories)


def configured_first_volumes(config: dict, stories: list) -> list[float] | None:
    """Per run of the stories (in order), the first-volume time the file states, or None.

    From ``fmri.first_volume_s``, or ``fmri.discarded_volumes`` x ``stories.tr_s``.
    """
    fmri, tr_s = config["fmri"], float(config["stories"]["tr_s"])
    key, values = (("fmri.first_volume_s", [float(t) for t in fmri["first_volume_s"]])
                   if fmri["first_volume_s"] else
                   ("fmri.discarded_volumes", [n * tr_s for n in fmri["discarded_volumes"]]))
    if not values:
        return None
    n_runs = sum(s.n_runs for s in stories)
    if len(values) != n_runs:
        raise ConfigError(f"{key} has {len(values)} entries but the stories have {n_runs} "
                          f"run(s) ({_run_labels(stories)}); give one per run, in order")
    return values


def brain_run_lengths(config: dict, stories: list) -> list[int]:
    """Volumes of each run of the stories (in order), counted in the first subject's files.

    A list entry in ``fmri.paths`` gives one file per run; a single file holds every run,
    so its runs are split by the stories' own ``n_volumes`` when there are several runs.
    """
    fmri = config["fmri"]
    entry = fmri["paths"][0]
    n_runs = sum(s.n_runs for s in stories)
    counts = real_masker(fmri).count_volumes(list(entry) if isinstance(entry, list) else entry)
    if len(counts) == n_runs:
        return counts
    if isinstance(entry, list):
        raise ConfigError(f"fmri.paths[0] lists {len(counts)} file(s) but the stories have "
                          f"{n_runs} run(s) ({_run_labels(stories)}); give one file per run")
    own = [n for s in stories for n in (s.n_volumes or ())]
    if len(own) != n_runs or sum(own) != counts[0]:
        raise ConfigError(f"fmri.paths[0] ({entry}) holds {counts[0]} volumes for {n_runs} runs "
                          f"({_run_labels(stories)}) and the stories do not split them "
                          f"(their own volumes: {own or 'none'}); give a list of one file per run")
    return own


def study_stories(config: dict) -> list:
    """The stories of a study, each with the scan its time courses are resampled onto.

    The TR is ``stories.tr_s``. Per run, over every story's runs in order:

    - real fMRI: the volumes are counted in the first subject's files
      (:func:`brain_run_lengths`), and the first volume is at ``fmri.first_volume_s`` or
      ``fmri.discarded_volumes`` x TR (the configuration requires one of them);
    - simulated fMRI: a story's own scan (the bundled story, a story directory) is kept; a
      story without one gets volumes covering its last word, with its first volume at
      the configured time, else at 0 s (the simulated scan starts with the words' clock).

    A story's own scan that disagrees with the data's raises ConfigError, and so do words
    outside the scan unless ``fmri.allow_words_outside_scan``.
    """
    from brainalign.stimuli import bundled_story, load_story

    tr_s, fmri = float(config["stories"]["tr_s"]), config["fmri"]
    stories = [bundled_story()] if config["stories"]["bundled"] else []
    stories += [load_story(path) for path in config["stories"]["paths"]]
    names = [s.name for s in stories]
    if len(set(names)) != len(names):
        raise ConfigError(f"stories have duplicate names {names}; rename the files")
    first = configured_first_volumes(config, stories)
    volumes = brain_run_lengths(config, stories) if fmri["source"] != "simulated" else None
    scanned, start = [], 0
    for story in stories:
        runs = slice(start, start + story.n_runs)
        start = runs.stop
        if story.tr_s is not None and abs(story.tr_s - tr_s) > 1e-9:
            raise ConfigError(f"story {story.name!r} was scanned with TR {story.tr_s} s but "
                              f"stories.tr_s = {tr_s}; set stories.tr_s to match")
        story_first = tuple(first[runs]) if first is not None else story.first_volume_s
        story_volumes = tuple(volumes[runs]) if volumes is not None else story.n_volumes
        if story.has_scan and (story_first, story_volumes) != (story.first_volume_s,
                                                                story.n_volumes):
            raise ConfigError(
                f"story {story.name!r} carries its own scan ({story.n_volumes} volumes, first "
                f"at {story.first_volume_s} s) but the study gives {story_volumes} volumes, "
                f"first at {story_first} s (fmri.first_volume_s / discarded_volumes, the brain "
                "files); make them agree")
        if story_first is None:
            story_first = (0.0,) * story.n_runs
            logger.info("story %s has no scan: the simulated scan starts at 0 s", story.name)
        if story_volumes is None:
            story_volumes = tuple(
                int(math.ceil((max(w.offset_s for w in story.run_words(r)) - story_first[r])
                              / tr_s)) + 1 for r in range(story.n_runs))
            logger.info("story %s has no scan: %s simulated volumes of %.2f s", story.name,
                        story_volumes, tr_s)
        try:
            story = story.with_scan(tr_s, story_volumes, first_volume_s=story_first,
                                    allow_words_outside_scan=fmri["allow_words_outside_scan"])
        except ValueError as err:
            raise ConfigError(f"{err} (set fmri.first_volume_s or fmri.discarded_volumes to the "
                              "data's timing; fmri.allow_words_outside_scan = true accepts "
                              "words outside the scan)") from None
        scanned.append(story)
    return scanned


def scan_table(stories: list) -> dict:
    """The resolved scan of each story, as hashed into the stage cache keys."""
    return {story.name: {"tr_s": story.tr_s, "n_volumes": list(story.n_volumes),
                         "first_volume_s": list(story.first_volume_s)} for story in stories}


def _device(config: dict) -> str:
    device = config["model"]["device"]
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _layers(config: dict) -> list[int] | None:
    layers = config["model"]["layers"]
    return None if layers == "all" else list(layers)


def band_delays(result) -> dict[str, list[int]]:
    """The FIR delays (TRs) each band of a fitted encoding model was given: none for a band
    already convolved with the HRF (atoms resampled with the HRF, the word rate)."""
    return {band["name"]: [int(d) for d in band["delays"]] for band in result.bands}


def _write_json(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=_json_default))
    return path


def _json_default(value: Any):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def tqdm_subjects(subjects: list, progress: bool):
    """The subjects, with a progress bar when ``progress``."""
    from tqdm.auto import tqdm

    return tqdm(subjects, desc="subjects", unit="subject", disable=not progress)


def _stack_run_confounds(chosen: list, run_lengths: list[int]) -> tuple[np.ndarray, list[str]]:
    """Runs' confounds one after another, shape (n_tr, n_columns), and the columns.

    Columns are the union over runs (runs differ, e.g. in their number of cosine drifts);
    a column a run lacks is zero there, and the encoding's per-run nuisance fit drops
    columns that are constant within a run.
    """
    columns = sorted({c for run in chosen for c in run.columns})
    out = np.zeros((sum(run_lengths), len(columns)))
    start = 0
    for run, n in zip(chosen, run_lengths):
        for j, name in enumerate(run.columns):
            out[start:start + n, columns.index(name)] = run.values[:, j]
        start += n
    return out, columns


def concatenate_timecourses(parts: list) -> Any:
    """Stories' NeuronTimecourses one after another in time, run labels kept distinct."""
    from brainalign.timecourse import NeuronTimecourses

    if len(parts) == 1:
        return parts[0]
    runs, offset = [], 0
    for part in parts:
        runs.append(np.asarray(part.runs) + offset)
        offset = int(runs[-1].max()) + 1
    return NeuronTimecourses(np.concatenate([np.asarray(p.data) for p in parts]),
                             np.concatenate([p.times_s for p in parts]), np.concatenate(runs),
                             parts[0].neurons, {"stories": [p.provenance for p in parts]})


# --------------------------------------------------------------------------- the study

class Study:
    """The stages of one study and the folders they live in (see :func:`run_study`)."""

    def __init__(self, config: dict, progress: bool = True):
        self.config = config
        self.progress = progress
        self.out = Path(config["study"]["out"])
        self.cache = StageCache(self.out)
        self.models = study_models(config)
        self.design = None
        if config["fmri"]["source"] == "bids":
            from brainalign.pipeline.bids_design import bids_design

            self.design = bids_design(config)
            self.stories = self.design.stories
        else:
            self.stories = study_stories(config)
        # every stage on the TR grid is keyed on the scans it used, which come partly from
        # files (story directories, brain data), not from the configuration alone, and
        # every stage on what it read (words, model, fMRI and band files)
        self.config = {**config, SCAN_TABLE: scan_table(self.stories),
                       INPUTS_TABLE: study_inputs(config, self.stories, self.design)}
        self.runs: list[StageRun] = []
        self.notes: list[str] = []  # said on every run (notes of a stage's build are in its folder)

    # -- stage runner --------------------------------------------------------------
    def stage(self, name: str, build: Callable[[Path], None]) -> Path:
        """Load stage ``name`` from the cache, or compute it with ``build(folder)``."""
        path = self.cache.path(name, self.config)
        started = time.perf_counter()
        if self.cache.is_complete(name, self.config):
            status = "cached"
        else:
            _event(f"stage {name} started", event="stage_start", stage=name)
            with self.cache.build(name, self.config) as folder:
                build(folder)
            status = "computed"
        wall_s = time.perf_counter() - started
        self.runs.append(StageRun(name, status, str(path), round(wall_s, 3)))
        _event(f"stage {name} {status} in {wall_s:.1f} s", event="stage", stage=name,
               status=status, wall_s=round(wall_s, 3), path=str(path))
        return path

    def skip(self, name: str) -> None:
        self.runs.append(StageRun(name, "skipped", "", 0.0))
        _event(f"stage {name} skipped", event="stage", stage=name, status="skipped")

    # -- record --------------------------------------------------------------------
    def build_record(self, folder: Path) -> None:
        from brainalign.models.registry import load_model
        from brainalign.record import record_story

        model, compute = self.config["model"], self.config["compute"]
        options = dict(layers=_layers(self.config), context_tokens=model["context_tokens"],
                       pooling=model["pooling"])
        if compute["scheduler"] != "serial":
            from brainalign.pipeline.scale import map_units
            from brainalign.pipeline.units import RecordingUnit, record_unit

            units = [RecordingUnit(name, story, model["sites"], str(folder / slug), options,
                                   str(_device(self.config)))
                     for slug, name in self.models for story in self.stories]
            _event(f"recording {len(units)} units on {compute['scheduler']}", event="record",
                   n_units=len(units), scheduler=compute["scheduler"])
            map_units(record_unit, units, scheduler=compute["scheduler"],
                      n_workers=compute["n_workers"])
            return
        for slug, name in self.models:
            loaded = load_model(name, device=_device(self.config))
            for story in self.stories:
                record_story(loaded, story, model["sites"], folder / slug, progress=self.progress,
                             **options)

    def recording(self, slug: str, story) -> Any:
        from brainalign.record import Recording

        return Recording.open(self.cache.path("record", self.config) / slug / story.name)

    # -- time courses --------------------------------------------------------------
    def build_timecourse(self, folder: Path) -> None:
        from brainalign.timecourse import recording_to_tr

        options = self.config["timecourse"]
        allow = self.config["fmri"]["allow_words_outside_scan"]
        for slug, _ in self.models:
            # the study's stories carry the current scan (the recording's copy may predate it)
            parts = [recording_to_tr(self.recording(slug, story), method=options["method"],
                                     story=story, zscore=options["zscore"],
                                     trim=tuple(options["trim"]),
                                     allow_words_outside_scan=allow, progress=self.progress)
                     for story in self.stories]
            concatenate_timecourses(parts).save(folder / slug)

    def timecourses(self, slug: str) -> Any:
        from brainalign.timecourse import NeuronTimecourses

        return NeuronTimecourses.load(self.cache.path("timecourse", self.config) / slug)

    # -- fMRI ----------------------------------------------------------------------
    @property
    def spaces(self) -> list[str]:
        fmri = self.config["fmri"]
        return list(fmri["spaces"]) if fmri["source"] == "simulated" else ["data"]

    def build_fmri(self, folder: Path) -> None:
        from brainalign.pipeline.spaces import space_atlas, target_space
        from brainalign.simulate import simulate_fmri

        fmri, seed = self.config["fmri"], self.config["study"]["seed"]
        if fmri["source"] == "bids":
            self.build_bids_fmri(folder)
            return
        if fmri["source"] != "simulated":
            self.build_real_fmri(folder)
            return
        notes = {}
        for slug, _ in self.models:
            runs = np.asarray(self.timecourses(slug).runs)
            atoms = self.story_atoms(slug)
            for space in fmri["spaces"]:
                planting = space_atlas(space, "yeo7")
                notes[space] = planting.note
                tspace = target_space(planting)
                # the study's own atoms are planted: n_planted networks each respond to a
                # distinct atom, the other atoms drive nothing; recovery then measures the
                # encoding and the network mapping (benchmarks/recovery.py --plant subgroups
                # measures the decomposition too)
                simulation = simulate_fmri(
                    space=tspace, atoms=atoms, runs=runs, tr_s=float(self.config["stories"]["tr_s"]),
                    n_silent_networks=max(0, tspace.n_networks - fmri["n_planted"]),
                    snr=fmri["snr"], noise=fmri["noise"], n_subjects=fmri["n_subjects"],
                    random_state=seed)
                simulation.save(folder / slug / space)
        _write_json(folder / "notes.json", notes)

    def build_real_fmri(self, folder: Path) -> None:
        """Each ``fmri.paths`` entry is one subject: a file holding every run, or a list of
        one file per run, in the order of the stories' runs. Every subject must have the
        stories' volumes (their scans, :func:`study_stories`); the TRs that
        ``timecourse.trim`` drops from the time courses are dropped here too."""
        import nibabel as nib
        from sklearn.base import clone

        from brainalign.brain import load_brain
        from brainalign.timecourse import trim_mask

        fmri = self.config["fmri"]
        run_lengths = [n for story in self.stories for n in story.n_volumes]
        first_volume_s = [t for story in self.stories for t in story.first_volume_s]
        trim = tuple(self.config["timecourse"]["trim"])
        for slug, _ in self.models:
            target = folder / slug / "data"
            target.mkdir(parents=True, exist_ok=True)
            masker = None
            for subject, entry in enumerate(fmri["paths"]):
                imgs = list(entry) if isinstance(entry, list) else entry
                if masker is None:  # fitted on the first subject, shared by all
                    masker = clone(real_masker(fmri))
                    if not isinstance(entry, list):  # one file holds every run
                        masker.set_params(run_lengths=run_lengths)
                brain = load_brain(imgs, masker, n_volumes=run_lengths,
                                   first_volume_s=first_volume_s)
                keep = trim_mask(brain.runs, trim)
                np.savez_compressed(target / f"sub-{subject + 1:02d}.npz",
                                    bold=brain.data[keep].astype(np.float32),
                                    runs=brain.runs[keep])
            description = {"source": fmri["source"], "space": masker.space_,
                           "n_targets": int(masker.n_targets_),
                           "target_names": masker.target_names_, "n_volumes": run_lengths,
                           "first_volume_s": first_volume_s, "trim": list(trim)}
            if fmri["source"] == "nifti":
                nib.save(masker.mask_img_, target / "mask.nii.gz")
            if fmri["source"] == "gifti":
                description["n_vertices"] = masker.n_vertices_
                description["mask"] = {h: m.tolist() for h, m in masker.mask_.items()}
            _write_json(target / "brain.json", description)

    def build_bids_fmri(self, folder: Path) -> None:
        """One subject at a time: its runs (the design's order) through one masker, its
        confounds by ``[confounds]`` (nilearn's strategies) and the volumes scrubbing keeps,
        into ``sub-<label>.npz`` (bold, runs, confounds, keep). The TRs that
        ``timecourse.trim`` drops are dropped from all of them."""
        import nibabel as nib

        from brainalign.brain import SurfaceMasker, VolumeMasker, load_brain
        from brainalign.brain.bids import load_run_confounds
        from brainalign.pipeline.bids_design import confound_options
        from brainalign.timecourse import trim_mask

        design = self.design
        run_lengths = [n for story in self.stories for n in story.n_volumes]
        first_volume_s = [t for story in self.stories for t in story.first_volume_s]
        trim = tuple(self.config["timecourse"]["trim"])
        options = confound_options(self.config)
        user_mask = self.config["fmri"]["mask"]
        if design.dataset.is_surface:
            if user_mask:
                raise ConfigError(f"fmri.mask = {user_mask!r} is a volume mask but "
                                  f"fmri.bids_space = {design.dataset.space!r} is a surface")
            masker = SurfaceMasker(space=design.dataset.space)
        else:  # the voxels inside every run's brain mask (and fmri.mask): shared by subjects
            masks = [run.mask for runs in design.runs.values() for run in runs]
            if any(m is None for m in masks):
                raise ConfigError(f"{design.runs[design.subjects[0]][0].image}: volume runs "
                                  "need fMRIPrep's desc-brain_mask beside them")
            masks += [user_mask] if user_mask else []
            images = [nib.load(m) for m in masks]
            reference = images[0]
            for path, image in zip(masks, images):
                if image.shape[:3] != reference.shape[:3] or not np.allclose(
                        image.affine, reference.affine, atol=1e-3):
                    raise ConfigError(f"{path}: mask grid {image.shape[:3]} does not match the "
                                      f"runs' grid {reference.shape[:3]} ({masks[0]})")
            inside = np.logical_and.reduce([np.asarray(i.dataobj) > 0 for i in images])
            masker = VolumeMasker(mask_img=nib.Nifti1Image(inside.astype(np.uint8),
                                                           reference.affine),
                                  space=design.dataset.space)
        described = {}
        for slug, _ in self.models:
            target = folder / slug / "data"
            target.mkdir(parents=True, exist_ok=True)
            for subject in tqdm_subjects(design.subjects, self.progress):
                runs = design.runs[subject]
                brain = load_brain([run.bold for run in runs], masker, n_volumes=run_lengths,
                                   first_volume_s=first_volume_s)
                chosen = [load_run_confounds(run, **options) for run in runs]
                confounds, columns = _stack_run_confounds(chosen, run_lengths)
                keep = np.ones(len(brain.runs), dtype=bool)
                start = 0
                for run_confounds, n in zip(chosen, run_lengths):
                    if run_confounds.sample_mask is not None:
                        kept = np.zeros(n, dtype=bool)
                        kept[run_confounds.sample_mask] = True
                        keep[start:start + n] = kept
                    start += n
                rows = trim_mask(brain.runs, trim)
                np.savez(target / f"sub-{subject}.npz", bold=brain.data[rows].astype(np.float32),
                         runs=brain.runs[rows], confounds=confounds[rows].astype(np.float32),
                         keep=keep[rows])
                described[subject] = {"confound_columns": columns,
                                      "confound_files": [c.file for c in chosen],
                                      "scrubbed_volumes": int((~keep[rows]).sum()),
                                      "excluded_targets": brain.provenance["excluded_targets"]}
                _event(f"sub-{subject}: {len(brain.runs)} volumes, {len(columns)} confound "
                       f"columns, {described[subject]['scrubbed_volumes']} scrubbed",
                       event="bids_subject", subject=subject)
            description = {"source": "bids", "space": masker.space_,
                           "n_targets": int(masker.n_targets_), "target_names": None,
                           "n_volumes": run_lengths, "first_volume_s": first_volume_s,
                           "trim": list(trim), "design": design.describe(),
                           "confounds": {"options": {k: (list(v) if isinstance(v, tuple) else v)
                                                     for k, v in options.items()},
                                         "subjects": described},
                           "story_of_run": design.story_of_run}
            if design.dataset.is_surface:
                description["n_vertices"] = masker.n_vertices_
                description["mask"] = {h: m.tolist() for h, m in masker.mask_.items()}
            else:
                nib.save(masker.mask_img_, target / "mask.nii.gz")
            _write_json(target / "brain.json", description)

    def subject_files(self, slug: str, space: str) -> list[Path]:
        """Real data: each subject's ``.npz`` (bold, runs and, for BIDS, confounds, keep)."""
        return sorted((self.cache.path("fmri", self.config) / slug / space).glob("sub-*.npz"))

    def brain(self, slug: str, space: str) -> "SpaceData":
        """The subjects' BOLD in one space, its masker and (simulations) the planted truth."""
        from brainalign.simulate import Simulation

        root = self.cache.path("fmri", self.config) / slug / space
        if space != "data":
            simulation = Simulation.load(root)
            target = simulation.space
            names = ([f"roi{i:03d}" for i in range(target.n_targets)] if target.kind == "roi"
                     else None)
            from brainalign.pipeline.spaces import space_masker

            masker = space_masker(space, target.n_targets, names, target.mask_img)
            return SpaceData(simulation.bold, simulation.runs, masker, target.mask_img,
                             simulation)
        import nibabel as nib

        from brainalign.brain import RoiTableMasker, SurfaceMasker, VolumeMasker

        description = json.loads((root / "brain.json").read_text())
        mask_img = nib.load(root / "mask.nii.gz") if (root / "mask.nii.gz").exists() else None
        source = description["source"]
        if source == "bids":
            source = "gifti" if "mask" in description else "nifti"
        if source == "nifti":
            masker = VolumeMasker(mask_img=mask_img, space=description["space"]).fit()
        elif source == "gifti":
            masker = SurfaceMasker(mask={h: np.asarray(m, bool) for h, m in
                                         description["mask"].items()},
                                   space=description["space"]).fit()
        else:
            masker = RoiTableMasker(names=description["target_names"]).fit()
        paths = self.subject_files(slug, space)
        with np.load(paths[0]) as arrays:
            runs = arrays["runs"]
        return SpaceData(SubjectFiles(paths), runs, masker, mask_img, None)

    def mapping_atlas(self, space: str, data: "SpaceData") -> Any:
        """The ``networks.atlas`` over a space's targets (a SpaceAtlas)."""
        from brainalign.networks import load_atlas
        from brainalign.pipeline.spaces import SpaceAtlas, space_atlas

        name = self.config["networks"]["atlas"]
        if space != "data":
            return space_atlas(space, name, data.mask_img)
        source = self.config["fmri"]["source"]
        if source == "bids":
            source = "nifti" if data.mask_img is not None else "gifti"
        if source == "nifti":  # the masker, so that its declared space is checked
            atlas = load_atlas(name, "MNI", target=data.masker)
        elif source == "gifti":
            atlas = load_atlas(name, data.masker.space_)
        else:
            atlas = load_atlas(name, "roi")
        if atlas.n_targets != data.masker.n_targets_:
            raise ConfigError(f"networks.atlas = {name!r} has {atlas.n_targets} targets in the "
                              f"data's space but the fMRI has {data.masker.n_targets_}; give an "
                              f"atlas over the same targets (a file path)")
        return SpaceAtlas(space, atlas)

    # -- reference corpus ----------------------------------------------------------
    @property
    def corpus(self) -> str | None:
        """The reference corpus the atoms are fitted on (``patterns.fit_on``), or None."""
        return corpus_name(self.config["patterns"])

    def build_corpus(self, folder: Path) -> None:
        """Record each model on the corpus's first ``patterns.corpus_words`` words, straight to
        the TR grid of the study's TR (``stories.tr_s``), with the study's sites, layers,
        context and resampling."""
        from brainalign.models.registry import load_model
        from brainalign.record import record_corpus
        from brainalign.timecourse import TrResampling

        model = self.config["model"]
        for slug, name in self.models:
            record_corpus(load_model(name, device=_device(self.config)), self.corpus,
                          self.config["patterns"]["corpus_words"], folder / slug,
                          model["sites"], layers=_layers(self.config),
                          context_tokens=model["context_tokens"], pooling=model["pooling"],
                          resampling=TrResampling(method=self.config["timecourse"]["method"]),
                          progress=self.progress, tr_s=float(self.config["stories"]["tr_s"]))

    def corpus_timecourses(self, slug: str) -> Any:
        """The corpus's neuron time courses (``data`` a memory map, shape (n_tr, n_neurons))."""
        from brainalign.record import load_corpus_timecourses

        folder = self.cache.path("corpus", self.config) / slug
        return load_corpus_timecourses(next(p for p in folder.iterdir() if p.is_dir()))

    # -- patterns ------------------------------------------------------------------
    def build_patterns(self, folder: Path) -> None:
        from brainalign.patterns import fit_atoms
        from brainalign.patterns.stability import split_half_rows
        from brainalign.pipeline.bands import cleaned_runs_on_disk, cleaned_timecourses

        options, seed = self.config["patterns"], self.config["study"]["seed"]
        fit = dict(n_atoms=options["n_atoms"], train_runs="all", method=options["method"],
                   consensus_fits=options["consensus_fits"], random_state=seed,
                   stability_seeds=[seed + 1] if options["stability"] else [],
                   **({"alpha": options["alpha"]} if options["method"] == "dictionary" else {}))
        notes: list[str] = []  # kept in the stage folder: a cached run reports them too
        for slug, _ in self.models:
            runs = (self.timecourses(slug) if self.corpus is None
                    else self.corpus_timecourses(slug)).runs
            halves, _ = split_half_rows(np.asarray(runs), np.arange(len(runs)))
            fit["split_half"] = options["stability"] and min(map(len, halves)) >= options["n_atoms"]
            if options["stability"] and not fit["split_half"]:
                notes.append(f"patterns: no split-half stability for {slug}: a half has "
                             f"{min(map(len, halves))} TRs, fewer than the "
                             f"{options['n_atoms']} atoms")
            if self.corpus is None:
                # the study's atoms are fitted on every run, cleaned as the encoding cleans its
                # features: they give the maps and the network mapping; the encoding's
                # held-out scores use atoms refitted inside each fold (encoding.atoms_per_fold)
                cleaned = cleaned_timecourses(self.timecourses(slug), self.config)
                patterns = fit_atoms(cleaned, **fit)
            else:
                # the corpus, cleaned run by run like the stories, is read from disk in
                # blocks; the atoms never see the stories
                cleaned = cleaned_runs_on_disk(self.corpus_timecourses(slug), self.config,
                                               folder / f"{slug}-corpus-cleaned.npy")
                patterns = fit_atoms(cleaned, in_memory=False, **fit)
                Path(cleaned.data.filename).unlink()
            patterns.save(folder / slug)
            if options["stability_k"] and self.corpus is None:
                notes += self.stability_curve(slug, cleaned, min(map(len, halves)),
                                              folder / slug / STABILITY_CURVE)
        _write_json(folder / "notes.json", notes)

    def stability_curve(self, slug: str, cleaned: Any, half_trs: int, path: Path) -> list[str]:
        """Seed and split-half stability at each K of ``patterns.stability_k``, fitted as the
        study's atoms are (same time courses, method, penalty and seeds), written to ``path``.

        K larger than the TRs of the smaller split half (``half_trs``) cannot be split and
        is left out; returns the notes saying so."""
        from brainalign.patterns.stability import stability_curve

        options, seed = self.config["patterns"], self.config["study"]["seed"]
        requested = sorted(set(options["stability_k"]))
        candidates = [k for k in requested if k <= half_trs]
        notes = []
        if len(candidates) < len(requested):
            notes.append(f"patterns.stability_k: {slug}: K = "
                         f"{[k for k in requested if k > half_trs]} left out of the "
                         f"stability curve, a split half has only {half_trs} TRs")
        if not candidates:
            return notes
        curve = stability_curve(cleaned, candidates, seeds=[seed + 1], split_half=True,
                                train_runs="all", method=options["method"], random_state=seed,
                                consensus_fits=options["consensus_fits"],
                                **({"alpha": options["alpha"]}
                                   if options["method"] == "dictionary" else {}))
        document = curve.to_dict()
        document.update(requested=requested, fitted_on="story")
        document["provenance"] = provenance_block(
            stage="patterns", part="stability_curve", model=slug,
            config_hash=config_hash(self.config), fit_stories=[s.name for s in self.stories])
        _write_json(path, document)
        return notes

    def stability_curve_path(self, slug: str) -> Path:
        """Where :meth:`stability_curve` wrote ``slug``'s curve (it may not exist)."""
        return self.cache.path("patterns", self.config) / slug / STABILITY_CURVE

    def patterns_stability(self) -> dict:
        """Per model: where the atoms were fitted, the means of their seed and split-half
        stability (``Patterns.stability``, without per-pair lists; the split halves' mean
        principal-subspace canonical r), the consensus reliability when
        ``patterns.consensus_fits`` > 1, and the stability curve's path ("" when there is
        none); empty for models fitted without stability or consensus."""
        keys = {"seed": ("atom_r_mean", "loading_r_mean", "subgroup_ari_mean",
                         "subgroup_iou_mean", "reference_seed", "seeds"),
                "split_half": ("atom_r_mean", "loading_r_mean", "subgroup_ari",
                               "subgroup_iou_mean", "scheme", "n_tr")}
        summary = {}
        for slug, _ in self.models:
            patterns = self.patterns(slug)
            entry = {kind: {key: patterns.stability[kind].get(key) for key in names}
                     for kind, names in keys.items() if kind in patterns.stability}
            subspace = patterns.stability.get("split_half", {}).get("subspace")
            if subspace:
                entry["split_half"]["subspace_canonical_r_mean"] = subspace["canonical_r_mean"]
            if "consensus" in patterns.stability:
                consensus = patterns.stability["consensus"]
                entry["consensus"] = {key: consensus[key] for key in
                                      ("n_fits", "reliability_mean", "reliability_min")}
            if not entry:
                continue
            entry["fitted_on"] = (f"corpus:{self.corpus}" if self.corpus is not None
                                  else "story: " + ", ".join(map(str, patterns.fit_stories)))
            curve = self.stability_curve_path(slug)
            entry["curve"] = str(curve) if curve.exists() else ""
            summary[slug] = entry
        return summary

    def patterns(self, slug: str) -> Any:
        from brainalign.patterns import Patterns

        return Patterns.load(self.cache.path("patterns", self.config) / slug)

    def story_atoms(self, slug: str) -> np.ndarray:
        """The atoms as time courses on the stories' TRs, shape (n_tr, n_atoms): the fitted
        dictionary when it was fitted on the stories, else its :meth:`atom_regressors`."""
        if self.corpus is None:
            return np.asarray(self.patterns(slug).atoms, dtype=np.float64)
        return self.atom_regressors(slug)

    def atom_regressors(self, slug: str) -> np.ndarray:
        """The atoms' time courses on every TR, shape (n_tr, n_atoms): the one way to atom
        regressors, :meth:`Patterns.transform` of the cleaned neuron time courses."""
        from brainalign.pipeline.bands import cleaned_timecourses

        cleaned = cleaned_timecourses(self.timecourses(slug), self.config)
        return np.asarray(self.patterns(slug).transform(cleaned.data), dtype=np.float64)

    # -- encoding ------------------------------------------------------------------
    def build_encoding(self, folder: Path) -> None:
        from brainalign.pipeline.bands import (atom_band, study_bands, study_cleaning,
                                               study_outer_groups)
        from brainalign.pipeline.scale import map_units
        from brainalign.pipeline.units import EncodingUnit, encode_unit

        options, compute = self.config["encoding"], self.config["compute"]
        common = dict(delays=list(options["delays"]), fdr_alpha=options["fdr_q"],
                      random_state=self.config["study"]["seed"],
                      clean=study_cleaning(self.config), tr_s=float(self.config["stories"]["tr_s"]))
        units = []
        for slug, name in self.models:
            bands = study_bands(self, slug)
            whole_story = {"atoms": atom_band(self.atom_regressors(slug), self.config)}
            for space in self.spaces:
                data = self.brain(slug, space)
                groups = study_outer_groups(self, data.runs)  # leave one story out (BIDS)
                if groups is not None:
                    common["outer_groups"] = groups
                # real data: each unit reads its subject's file (one subject in memory)
                subjects = (self.subject_files(slug, space) if space == "data"
                            else list(data.bold))
                for subject, bold in enumerate(subjects):
                    label = (Path(bold).stem if isinstance(bold, Path)
                             else f"sub-{subject + 1:02d}")
                    bold = str(bold) if isinstance(bold, Path) else bold
                    provenance = {"model": name, "space": space, "subject": label,
                                  "bands": list(bands)}
                    units.append(EncodingUnit(
                        f"{slug}/{space}/{label}", bands, bold, data.runs,
                        dict(common, n_perm=options["n_permutations"], null=options["null"],
                             n_band_shifts=options["n_band_shifts"], provenance=provenance),
                        out=str(folder / slug / space / label)))
                    if options["atoms_per_fold"] and self.corpus is None:
                        # the comparison the summary reports (corpus atoms never see a fold)
                        units.append(EncodingUnit(
                            f"{slug}/{space}/whole-story-atoms/{label}", whole_story, bold,
                            data.runs, dict(common, n_perm=0, provenance={
                                **provenance, "bands": ["atoms"],
                                "atoms": "fitted on the whole story (comparison)"}),
                            out=str(folder / slug / space / "whole-story-atoms" / label)))
        _event(f"encoding {len(units)} units on {compute['scheduler']}", event="encoding",
               n_units=len(units), scheduler=compute["scheduler"])
        map_units(encode_unit, units, scheduler=compute["scheduler"],
                  n_workers=compute["n_workers"])

    def encodings(self, slug: str, space: str, whole_story_atoms: bool = False) -> SubjectFiles:
        """The subjects' encoding results, read one at a time when indexed or iterated
        (``whole_story_atoms``: the comparison fits with atoms fitted on the whole story;
        empty when not made)."""
        from brainalign.encoding import load

        root = self.cache.path("encoding", self.config) / slug / space
        if whole_story_atoms:
            root = root / "whole-story-atoms"
        return SubjectFiles(sorted(p for p in root.glob("sub-*") if p.is_dir()), load)

    # -- networks ------------------------------------------------------------------
    def build_networks(self, folder: Path) -> None:
        from tqdm.auto import tqdm

        from brainalign.networks.mapping import (layer_network_composition, map_patterns,
                                                 subgroup_networks)
        from brainalign.networks.spatial import spatial_shift_test
        from brainalign.networks.temporal import temporal_network_test
        from brainalign.pipeline.bands import atom_delays, study_cleaning
        from brainalign.simulate.recovery import score_mapping

        options, seed = self.config["networks"], self.config["study"]["seed"]
        pairs = [(slug, space) for slug, _ in self.models for space in self.spaces]
        for slug, space in tqdm(pairs, desc="network mapping", disable=not self.progress):
            patterns = self.patterns(slug)
            atoms = self.story_atoms(slug)
            regressors = self.atom_regressors(slug)
            results = self.encodings(slug, space)
            maps = self.pattern_maps(slug, space)
            data = self.brain(slug, space)
            mapping_atlas = self.mapping_atlas(space, data)
            delays = atom_delays(results[0])   # as the encoding model delayed the atoms
            temporal = None
            if options["n_shifts"] > 0:
                temporal = temporal_network_test(
                    regressors, data.bold, data.runs, mapping_atlas.atlas, delays=delays,
                    n_shifts=options["n_shifts"], clean=study_cleaning(self.config),
                    tr_s=float(self.config["stories"]["tr_s"]), random_state=seed)
            spatial = None
            if options["null"] == "shift":
                spatial = spatial_shift_test(
                    regressors, data.bold, data.runs, mapping_atlas.atlas,
                    delays=delays, n_shifts=options["n_null"],
                    clean=study_cleaning(self.config),
                    tr_s=float(self.config["stories"]["tr_s"]), random_state=seed)
            mapping = map_patterns(maps, mapping_atlas.atlas, null=options["null"],
                                   n_perm=options["n_null"], alpha=options["alpha"],
                                   pattern_names=[f"atom{k:02d}" for k in range(len(maps))],
                                   temporal=temporal, spatial=spatial, random_state=seed)
            target = folder / slug / space
            target.mkdir(parents=True, exist_ok=True)
            mapping.to_json(target / "network_mapping.json")  # to_tsv writes mapping.json
            mapping.to_tsv(target / "mapping.tsv")
            np.save(target / "pattern_maps.npy", maps.astype(np.float32))
            neurons = subgroup_networks(mapping, patterns.subgroup, layer=patterns.neurons.layer)
            neurons.to_csv(target / "neurons.tsv", sep="\t", index=False)
            layer_network_composition(neurons, mapping.networks).to_csv(
                target / "layer_networks.tsv", sep="\t")
            _write_json(target / "notes.json", {"mapping_atlas_note": mapping_atlas.note})
            if data.simulation is None:
                continue
            scores = score_mapping(data.simulation, atoms, mapping.assigned,
                                   [r.r for r in results],
                                   [r.p_values if self.config["encoding"]["n_permutations"] > 0
                                    else None for r in results])
            scores.details.update(null=mapping.null, n_null=options["n_null"],
                                  n_shifts=options["n_shifts"],
                                  mapping_atlas=mapping_atlas.atlas.name,
                                  planted_network_names=list(data.simulation.space.network_names))
            _write_json(target / "recovery.json", scores.to_dict())

    def pattern_maps(self, slug: str, space: str) -> np.ndarray:
        """One map per atom: delay-summed encoding coefficients, mean over the subjects in
        which a target was fitted (NaN where none), shape (n_atoms, n_targets)."""
        from brainalign.encoding import mean_over_subjects, pattern_maps

        return mean_over_subjects([pattern_maps(r, band="atoms")
                                   for r in self.encodings(slug, space)])

    def mapping(self, slug: str, space: str) -> Any:
        from brainalign.networks.mapping import NetworkMapping

        return NetworkMapping.load(self.cache.path("networks", self.config) / slug / space
                                   / "network_mapping.json")

    def networks_file(self, slug: str, space: str, name: str) -> Path:
        return self.cache.path("networks", self.config) / slug / space / name

    # -- interventions (study B) ---------------------------------------------------
    def build_interventions(self, folder: Path) -> None:
        from brainalign.pipeline.lesion_check import lesion_check

        slug, name = self.models[0]
        story = self.stories[0]
        result = lesion_check(name, self.recording(slug, story), story,
                              self.config["interventions"], device=_device(self.config),
                              seed=self.config["study"]["seed"], progress=self.progress)
        _write_json(folder / "study_b.json", result)

    def study_b(self) -> dict:
        path = self.cache.path("interventions", self.config) / "study_b.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # -- export --------------------------------------------------------------------
    def export(self) -> tuple[dict, dict]:
        """NIfTI / GIfTI / TSV maps with sidecars into ``<out>/maps``, tables into ``<out>/tables``."""
        import shutil

        from brainalign.encoding import mean_over_subjects
        from brainalign.export import save_map
        from brainalign.pipeline.group_stage import export_group_maps

        maps_dir, tables_dir = self.out / "maps", self.out / "tables"
        maps: dict[str, dict[str, str]] = {}
        tables: dict[str, str] = {}
        encoding = self.config["encoding"]
        for slug, name in self.models:
            for space in self.spaces:
                results = self.encodings(slug, space)
                pattern_maps = self.pattern_maps(slug, space).astype(np.float32)
                data = self.brain(slug, space)
                masker = data.masker
                sidecar = {"model": name, "study_space": space,
                           "sites": self.config["model"]["sites"],
                           "features": "atoms", "bands": encoding["bands"],
                           "atoms_per_fold": encoding["atoms_per_fold"],
                           "n_atoms": int(pattern_maps.shape[0]),
                           "delays_tr": band_delays(results[0]),
                           "tr_s": self.config["stories"]["tr_s"],
                           "layers": self.config["model"]["layers"],
                           "timecourse": dict(self.config["timecourse"]),
                           "cleaning": dict(self.config["cleaning"]),
                           "scan": self.config[SCAN_TABLE],
                           "n_subjects": len(results), "simulated": data.simulation is not None,
                           "config_hash": config_hash(self.config)}
                if self.design is not None:
                    sidecar.update(bids_root=str(self.design.dataset.root),
                                   timing_layout=self.design.timing.layout,
                                   confounds=dict(self.config["confounds"]),
                                   cv="leave-one-story-out" if len(self.stories) > 1
                                   else "leave-one-run-out")
                key = f"{slug}/{space}"
                entities = {"model": slug.replace("-", "").replace("_", "").replace(".", "")}
                mean_r = mean_over_subjects([np.where(r.valid_targets, r.r, np.nan)
                                             for r in results])
                maps[key] = {
                    "r": str(save_map(mean_r, masker, maps_dir,
                                      {**entities, "desc": "encoding", "stat": "r"},
                                      {**sidecar, "description": "held-out Pearson r of the "
                                       "encoding model (all bands), mean over the subjects in "
                                       f"which the target was fitted ({NO_DATA})"})),
                    "patterns": str(save_map(pattern_maps, masker, maps_dir,
                                             {**entities, "desc": "patterns", "stat": "coef"},
                                             {**sidecar, "description": "one map per atom: "
                                              "delay-summed encoding coefficients, mean over "
                                              "the subjects in which the target was fitted "
                                              "(NaN where none; rows follow atom order)"},
                                             names=[f"atom{k:02d}"
                                                    for k in range(len(pattern_maps))])),
                }
                if self.design is not None:  # one map per subject, named by its BIDS label
                    for result in results:
                        label = result.provenance.get("subject", "")
                        subject = label[4:] if label.startswith("sub-") else label
                        maps[key][f"r_sub-{subject}"] = str(save_map(
                            np.where(result.valid_targets, result.r, np.nan),
                            masker, maps_dir, {"sub": subject, **entities, "desc": "encoding",
                                               "stat": "r"},
                            {**sidecar, "subject": subject, "n_subjects": 1,
                             "description": "held-out Pearson r of the encoding model (all "
                             f"bands), {sidecar['cv']}, this subject (NaN where the target "
                             "was not fitted)"}))
                partitions = [r.partition for r in results if r.partition is not None]
                for k, band in enumerate(partitions[0]["bands"] if partitions else []):
                    unique = mean_over_subjects([p["r_unique"][k] for p in partitions])
                    maps[key][f"unique_r_{band}"] = str(save_map(
                        unique, masker, maps_dir,
                        {**entities, "desc": f"unique{band.replace('_', '')}", "stat": "r"},
                        {**sidecar, "band": band, "description": f"unique held-out r of band "
                         f"{band!r}: r(all bands) - r(all but {band!r}), mean over the "
                         f"subjects in which the target was fitted ({NO_DATA})"}))
                if encoding["n_permutations"] > 0:
                    fraction = mean_over_subjects(
                        [np.where(r.valid_targets, r.significant(encoding["fdr_q"]), np.nan)
                         for r in results])
                    maps[key]["significant_fraction"] = str(save_map(
                        fraction, masker, maps_dir,
                        {**entities, "desc": "encoding", "stat": "fracsig"},
                        {**sidecar, "description": f"share of the subjects in which the target "
                         f"was fitted whose target is FDR significant at "
                         f"q={encoding['fdr_q']} ({NO_DATA})"}))
                maps[key].update(export_group_maps(self, slug, space, masker, maps_dir,
                                                   entities, sidecar))
                # surfaces: both hemispheres (a name of its own: ``name`` is the model's)
                for map_name, path in list(maps[key].items()):
                    if "hemi-L" in Path(path).name:
                        maps[key][f"{map_name}_right"] = str(Path(path).with_name(
                            Path(path).name.replace("hemi-L", "hemi-R")))
                for table in ("mapping.tsv", "mapping_assignments.tsv", "neurons.tsv",
                              "layer_networks.tsv"):
                    source = self.networks_file(slug, space, table)
                    if source.exists():
                        tables_dir.mkdir(parents=True, exist_ok=True)
                        target = tables_dir / f"{slug}_{space}_{table}"
                        shutil.copyfile(source, target)
                        tables[f"{key}/{table[:-4]}"] = str(target)
        return maps, tables

    # -- summary -------------------------------------------------------------------
    def recovery(self) -> dict:
        recovery: dict[str, Any] = {}
        accuracies = []
        for slug, _ in self.models:
            for space in self.spaces:
                path = self.networks_file(slug, space, "recovery.json")
                if not path.exists():
                    continue
                scores = json.loads(path.read_text())
                entry = {k: scores[k] for k in RECOVERY_KEYS}
                entry["atom_correlation_mean"] = float(np.mean(scores["atom_correlation"]))
                entry["planted_network"] = scores["planted_network"]
                entry["assigned_network"] = scores["assigned_network"]
                recovery[f"{slug}/{space}"] = entry
                accuracies.append(scores["accuracy"])
        if not recovery:
            return {}
        finite = [a for a in accuracies if a is not None and np.isfinite(a)]
        recovery["accuracy"] = float(np.mean(finite)) if finite else float("nan")
        return recovery

    def sizes(self) -> dict:
        slug = self.models[0][0]
        timecourses = self.timecourses(slug)
        config = self.config
        sizes = {"models": [n for _, n in self.models], "stories": [s.name for s in self.stories],
                 "n_words": int(sum(len(s.words) for s in self.stories)),
                 "n_tr": int(timecourses.n_tr), "n_neurons": int(timecourses.n_neurons),
                 "n_atoms": config["patterns"]["n_atoms"], "spaces": {},
                 # the subjects fitted (a simulation's n_subjects, BIDS subjects, fmri.paths)
                 "n_subjects": len(self.encodings(slug, self.spaces[0])),
                 "encoding_permutations": config["encoding"]["n_permutations"],
                 "null_maps": config["networks"]["n_null"],
                 "temporal_shifts": config["networks"]["n_shifts"],
                 "delays_tr": band_delays(self.encodings(slug, self.spaces[0])[0])}
        if config["fmri"]["source"] == "simulated":
            sizes.update(n_planted=config["fmri"]["n_planted"], snr=config["fmri"]["snr"])
        for space in self.spaces:
            sizes["spaces"][space] = int(self.brain(slug, space).masker.n_targets_)
        return sizes

    def bids_notes(self) -> list[str]:
        """What a BIDS study read: subjects, runs, stories, confounds, scrubbing, gaps."""
        design, slug = self.design, self.models[0][0]
        described = json.loads((self.cache.path("fmri", self.config) / slug / "data"
                                / "brain.json").read_text())
        subjects = described["confounds"]["subjects"]
        scrubbed = [entry["scrubbed_volumes"] for entry in subjects.values()]
        n_runs = len(design.story_of_run)
        notes = [f"BIDS ({design.timing.layout} timing, space {design.dataset.space}): "
                 f"{len(design.subjects)} subjects x {n_runs} runs of {len(design.stories)} "
                 f"stories, leave-one-story-out encoding"
                 + ("" if len(design.stories) > 1 else " (one story: leave one run out)"),
                 f"confounds {self.config['confounds']['strategy']}: "
                 f"{len(next(iter(subjects.values()))['confound_columns'])} columns, regressed "
                 f"out of features and targets in each fold; {sum(scrubbed)} volumes scrubbed "
                 f"({min(scrubbed)}-{max(scrubbed)} per subject)",
                 "the network tests (spatial shift null, temporal test) use the targets "
                 "without the confound regression and scrubbing of the encoding models"]
        notes += [f"missing in the dataset: {line}" for line in design.dataset.missing]
        return notes

    def collect_notes(self) -> list[str]:
        patterns_notes = self.cache.path("patterns", self.config) / "notes.json"
        notes = json.loads(patterns_notes.read_text()) if patterns_notes.exists() else []
        notes += self.notes
        if self.config["encoding"]["n_permutations"] == 0:
            notes.append("encoding.n_permutations = 0: no target-wise p-values; the "
                         "significance AUC ranks targets by held-out r")
        if self.config["networks"]["atlas"] == "none":
            notes.append('networks.atlas = "none": no network mapping; pattern maps are the '
                         "atoms' delay-summed encoding coefficients over the targets")
        if self.config["patterns"]["stability_k"] and self.corpus is not None:
            notes.append(f"patterns.stability_k: no stability curve, since the atoms are "
                         f"fitted on the corpus {self.corpus} and each corpus fit takes minutes")
        if self.design is not None:
            notes.extend(self.bids_notes())
        if self.config["fmri"]["source"] == "simulated":
            notes.append(f"simulated fMRI: the study's {self.config['patterns']['n_atoms']} "
                         f"atoms are planted, {self.config['fmri']['n_planted']} of them each "
                         f"driving one network (SNR {self.config['fmri']['snr']}, "
                         f"{self.config['fmri']['noise']} noise, "
                         f"{self.config['fmri']['n_subjects']} subjects)")
        fmri_notes = self.cache.path("fmri", self.config) / "notes.json"
        if fmri_notes.exists():
            for space, note in json.loads(fmri_notes.read_text()).items():
                if note:
                    notes.append(f"{space}: {note}")
        for slug, _ in self.models:
            for space in self.spaces:
                path = self.networks_file(slug, space, "notes.json")
                if path.exists():
                    note = json.loads(path.read_text()).get("mapping_atlas_note")
                    if note and f"{space}: {note}" not in notes:
                        notes.append(f"{space} mapping: {note}")
        return notes


def _attach_log(out: Path) -> logging.Handler:
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "study.log")
    handler.setFormatter(_JsonLines())
    handler.setLevel(logging.INFO)
    root = logging.getLogger("brainalign")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def run_study(config: dict, progress: bool = True) -> StudySummary:
    """Run (or resume) every stage of a study and write its maps, report and summary.

    Parameters
    ----------
    config : dict
        A validated configuration (:func:`brainalign.pipeline.config.load_config` or
        :func:`~brainalign.pipeline.config.validate`); ``study.out`` is the output folder.
    progress : bool
        tqdm progress bars on long work (recording, resampling, mapping).

    Returns
    -------
    StudySummary
        Also written to ``<out>/summary.json``; the report is ``<out>/report.html``. Each run
        replaces ``<out>/maps``, ``<out>/tables`` and the report as a whole: nothing of an
        earlier run with other settings is left beside them (the cache keeps the stages).
    """
    from tqdm.auto import tqdm

    from brainalign.pipeline.bands import encoding_summary
    from brainalign.pipeline.group_stage import group_summary, run_group_stage

    from brainalign.pipeline.config import preflight

    started = time.perf_counter()
    # every problem the configuration's files, models and atlas have, before any stage
    # runs and before the output folder is made
    preflight(config)
    out = Path(config["study"]["out"])
    created = not out.exists()
    handler = _attach_log(out)
    try:
        try:
            study = Study(config, progress=progress)
        except BaseException:
            if created:  # nothing was computed: leave no folder behind
                logging.getLogger("brainalign").removeHandler(handler)
                handler.close()
                shutil.rmtree(out, ignore_errors=True)
            raise
        config = study.config  # with the stories' resolved scans: hashed and recorded
        _event("study started", event="study_start", out=str(out),
               config_hash=config_hash(config))
        steps = [("record", study.build_record), ("timecourse", study.build_timecourse),
                 ("corpus", study.build_corpus), ("patterns", study.build_patterns),
                 ("fmri", study.build_fmri),
                 ("encoding", study.build_encoding), ("networks", study.build_networks),
                 ("interventions", study.build_interventions)]
        skipped = {"corpus": study.corpus is None,
                   "networks": config["networks"]["atlas"] == "none",
                   "interventions": not config["interventions"]["study_b"]}
        bar = tqdm(steps, desc="study", unit="stage", disable=not progress)
        for name, build in bar:
            bar.set_postfix_str(name)
            if skipped.get(name):
                study.skip(name)
            else:
                study.stage(name, build)
        run_group_stage(study)
        for stale in (out / "maps", out / "tables"):  # an earlier run's maps are not this one's
            shutil.rmtree(stale, ignore_errors=True)
        if not config["outputs"]["report"]:
            (out / "report.html").unlink(missing_ok=True)
        maps, tables = study.export() if config["outputs"]["maps"] else ({}, {})
        summary = StudySummary(
            out=str(out), wall_s=0.0, stages=study.runs, recovery=study.recovery(), maps=maps,
            tables=tables, study_b=study.study_b(), sizes=study.sizes(),
            notes=study.collect_notes(), config_hash=config_hash(config),
            group=group_summary(study), encoding=encoding_summary(study),
            patterns_stability=study.patterns_stability())
        if config["outputs"]["report"]:
            from brainalign.pipeline.study_report import write_report

            summary.report = str(write_report(study, summary, out / "report.html"))
        summary.wall_s = round(time.perf_counter() - started, 2)
        document = summary.to_dict()
        document["provenance"] = provenance_block(stage="study", config=config,
                                                  config_hash=summary.config_hash)
        _write_json(out / "summary.json", document)
        _event("study finished", event="study_end", wall_s=summary.wall_s,
               accuracy=summary.recovery.get("accuracy"))
        return summary
    finally:
        logging.getLogger("brainalign").removeHandler(handler)
        handler.close()
