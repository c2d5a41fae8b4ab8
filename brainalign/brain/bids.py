"""The runs of a BIDS dataset preprocessed by fMRIPrep: files, TR, volumes and confounds.

:func:`discover_bids` finds, for one output space, every run of the derivatives (fMRIPrep's
``desc-preproc`` NIfTI in a volume space, or the two ``hemi-L`` / ``hemi-R`` GIfTI files of a
surface space such as ``fsaverage5``), the confounds table beside each run, the brain mask of
volume runs, the repetition time and the volume count. A run is named by every entity of its
file name but the output's (``space``, ``cohort``, ``res``, ``den``, ``hemi``, ``desc``) and
the suffix: subject, session, task, and also ``acq``, ``ce``, ``rec``, ``dir``, ``run``,
``echo``..., so that two acquisitions or echoes of one run are two runs. What is missing (a
run in the raw dataset without preprocessed files in that space, a hemisphere, a confounds
table) is listed, not skipped silently; a space the derivatives do not hold is an error that
lists the spaces they do hold.

:func:`load_run_confounds` selects a run's confounds by a named strategy through nilearn's
:func:`nilearn.interfaces.fmriprep.load_confounds` (motion, high_pass, wm_csf, scrub...), and
returns the chosen columns and the volumes kept by scrubbing.

File finding and name parsing use nilearn's BIDS helpers
(:func:`nilearn.interfaces.bids.get_bids_files`, :func:`~nilearn.interfaces.bids.
parse_bids_filename`); only the pairing of a run with its sidecars follows BIDS naming here.

Repetition time, in this order: the derivative's JSON sidecar, the raw dataset's sidecars
(BIDS inheritance: subject level, then the top level's sidecar of the run's entities and
``task-<label>_bold.json``), the NIfTI header. A run whose TR cannot be found anywhere is an
error, never a default. The moment within each volume that its data stand for is the
``StartTime`` of the run's own sidecar (fMRIPrep's slice-timing reference), when it has one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from brainalign.stimuli.timing import run_sort_key

logger = logging.getLogger(__name__)

#: Surface spaces read as GIfTI (one file per hemisphere).
SURFACE_SPACES = ("fsaverage5", "fsaverage6", "fsaverage")

#: nilearn's default confound strategy (motion, cosine drifts, white matter and CSF).
DEFAULT_STRATEGY = ("motion", "high_pass", "wm_csf")

_IMAGE_TYPES = ("nii.gz", "nii", "func.gii")

#: Entities of an output file that are not part of its run's name (the output space, its
#: cohort, resolution and density, the hemisphere, the description).
_OUTPUT_ENTITIES = ("space", "cohort", "res", "den", "hemi", "desc")


class BidsError(ValueError):
    """A problem with a BIDS dataset; the one-line message names the file or folder."""


@dataclass(frozen=True)
class BidsRun:
    """One preprocessed fMRI run.

    Attributes
    ----------
    subject, task : str
        BIDS labels (without ``sub-`` / ``task-``).
    run : str or None
        Run label as in the file names; None when they have no run entity.
    session : str or None
    bold : str or dict
        The NIfTI path, or ``{"L": path, "R": path}`` for a surface space.
    confounds : str or None
        fMRIPrep's ``desc-confounds_timeseries.tsv`` beside the run (None when absent).
    mask : str or None
        Volume spaces: fMRIPrep's ``desc-brain_mask`` of the run.
    tr_s : float
        Repetition time, seconds.
    tr_source : str
        The file the TR was read from.
    start_time_s : float or None
        ``StartTime`` of the run's own (derivative) sidecar: seconds from the start of each
        volume's acquisition to the moment its data stand for (fMRIPrep writes it when it
        corrects slice timing: the reference slice's time). None when the sidecar has none.
    entities : tuple of (str, str)
        Every entity naming the run, in the order of its file name: ``sub``, ``ses``,
        ``task``, then e.g. ``acq``, ``ce``, ``rec``, ``dir``, ``run``, ``echo``; not the
        output's ``space``, ``cohort``, ``res``, ``den``, ``hemi``, ``desc``.
    """

    subject: str
    task: str
    run: str | None
    session: str | None
    bold: str | dict
    confounds: str | None
    mask: str | None
    tr_s: float
    tr_source: str
    start_time_s: float | None
    entities: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        """The run's entities: ``sub-01_task-story_run-1``, ``sub-01_ses-2_task-story_acq-
        lo_run-1``..."""
        return _entity_name(self.entities)

    @property
    def other_entities(self) -> str:
        """Entities besides subject, session, task and run (``acq-lo_echo-2``), or ''."""
        return _entity_name(pair for pair in self.entities
                            if pair[0] not in ("sub", "ses", "task", "run"))

    @property
    def image(self) -> str:
        """A file that names the run: the NIfTI, or the left hemisphere's GIfTI."""
        return self.bold if isinstance(self.bold, str) else self.bold["L"]

    def n_volumes(self) -> int:
        """Volumes of the run (NIfTI header; GIfTI: data arrays of the left hemisphere)."""
        import nibabel as nib

        if isinstance(self.bold, str):
            shape = nib.load(self.bold).shape
            return int(shape[3]) if len(shape) == 4 else 1
        from brainalign.brain.surface import read_gifti_series

        return int(read_gifti_series(self.bold["L"]).shape[0])


@dataclass
class BidsDataset:
    """What :func:`discover_bids` found.

    Attributes
    ----------
    root, derivatives : Path
    space : str
    res : str or None
        Volume resolution label (``res-2``), when the files carry one.
    runs : list of BidsRun
        Sorted by subject, session, task, run (as integers), then the other entities.
    missing : list of str
        One line per missing file (run, hemisphere, confounds table).
    spaces_found : list of str
        Every space the derivatives hold.
    """

    root: Path
    derivatives: Path
    space: str
    res: str | None
    runs: list[BidsRun]
    missing: list[str] = field(default_factory=list)
    spaces_found: list[str] = field(default_factory=list)

    @property
    def subjects(self) -> list[str]:
        return sorted({r.subject for r in self.runs})

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.runs})

    @property
    def is_surface(self) -> bool:
        return self.space in SURFACE_SPACES

    def subject_runs(self, subject: str) -> list[BidsRun]:
        return [r for r in self.runs if r.subject == subject]

    def describe(self, volumes: bool = True) -> list[str]:
        """Lines of a plain-text summary (``brainalign bids info``)."""
        lines = [f"BIDS root: {self.root}", f"derivatives: {self.derivatives}",
                 f"space: {self.space}" + (f" (res-{self.res})" if self.res else "")
                 + f"; spaces found: {', '.join(self.spaces_found) or 'none'}",
                 f"{len(self.subjects)} subject(s) x {len(self.tasks)} task(s), "
                 f"{len(self.runs)} run(s)"]
        lines.append(f"{'subject':<10} {'task':<16} {'run':<5} {'TR (s)':>7} "
                     f"{'volumes':>8} {'StartTime':>9}  {'confounds':<9}  other entities")
        for run in self.runs:
            count = str(run.n_volumes()) if volumes else "-"
            lines.append(f"{run.subject:<10} {run.task:<16} {run.run or '-':<5} "
                         f"{run.tr_s:>7.3g} {count:>8} "
                         f"{'-' if run.start_time_s is None else f'{run.start_time_s:.3g}':>9}  "
                         f"{'yes' if run.confounds else 'MISSING':<9}  "
                         f"{run.other_entities or '-'}")
        lines += [f"missing: {line}" for line in self.missing] or ["missing: nothing"]
        return lines


def _parse(path: str) -> dict:
    from nilearn.interfaces.bids import parse_bids_filename

    parsed = parse_bids_filename(path)
    return {**parsed["entities"], "_extension": parsed["extension"]}


def _run_entities(entities: dict) -> tuple[tuple[str, str], ...]:
    """The entities naming a file's run, in file-name order (see :class:`BidsRun`)."""
    return tuple((k, v) for k, v in entities.items()
                 if k not in _OUTPUT_ENTITIES and not k.startswith("_"))


def _entity_name(pairs) -> str:
    return "_".join(f"{k}-{v}" for k, v in pairs)


def _run_order(pairs: tuple[tuple[str, str], ...]) -> tuple:
    """Sort key: subject, session, task, run (as integers), then the other entities."""
    e = dict(pairs)
    return (e["sub"], e.get("ses") or "", e["task"], run_sort_key(e.get("run")), pairs)


def _resolve_derivatives(root: Path, derivatives: str | Path | None) -> Path:
    path = Path(derivatives) if derivatives else Path("derivatives") / "fmriprep"
    return path if path.is_absolute() else root / path


def _sidecar_of(path: str | Path) -> Path:
    """The JSON sidecar beside a BIDS file: its name with every extension replaced."""
    path = Path(path)
    return path.with_name(path.name.split(".")[0] + ".json")


def _sidecar_value(sidecar: Path, key: str):
    """``key`` of a JSON sidecar, or None when the file or the key is absent."""
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text()).get(key)
    except (OSError, ValueError) as err:
        raise BidsError(f"{sidecar}: cannot read the JSON sidecar: {err}") from None


def _sidecar_tr(candidates: Sequence[Path]) -> tuple[float, str] | None:
    for candidate in candidates:
        value = _sidecar_value(candidate, "RepetitionTime")
        if value is not None:
            if not isinstance(value, (int, float)) or not value > 0:
                raise BidsError(f"{candidate}: RepetitionTime = {value!r} is not a "
                                "positive number of seconds")
            return float(value), str(candidate)
    return None


def _repetition_time(image: str, run: tuple[tuple[str, str], ...],
                     root: Path) -> tuple[float, str]:
    """(TR in s, the file it came from): derivative sidecar, raw sidecars, NIfTI header.

    Raw sidecars by BIDS inheritance, the most specific first: the subject's folder (the
    run's full name, then subject-task-run, then subject-task), then the top level (the
    run's name without subject and session, then the task).
    """
    entities = dict(run)
    task, sub = entities["task"], entities["sub"]
    ses = entities.get("ses")
    prefix = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
    run_label = f"_run-{entities['run']}" if entities.get("run") else ""
    raw_func = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "func"
    top = _entity_name((k, v) for k, v in run if k not in ("sub", "ses"))
    candidates = list(dict.fromkeys([_sidecar_of(image),
                                     raw_func / f"{_entity_name(run)}_bold.json",
                                     raw_func / f"{prefix}_task-{task}{run_label}_bold.json",
                                     raw_func / f"{prefix}_task-{task}_bold.json",
                                     root / f"{top}_bold.json",
                                     root / f"task-{task}_bold.json"]))
    found = _sidecar_tr(candidates)
    if found is not None:
        return found
    if image.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        header = nib.load(image).header
        zooms = header.get_zooms()
        unit = header.get_xyzt_units()[1]
        if len(zooms) == 4 and zooms[3] > 0:
            scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
            return float(zooms[3]) * scale, f"{image} (NIfTI header)"
    raise BidsError(f"{image}: no RepetitionTime in its sidecar, the raw dataset's "
                    f"sidecars ({', '.join(str(c) for c in candidates[1:])}) or the image "
                    "header")


def _start_time(image: str, tr_s: float) -> float | None:
    """``StartTime`` (s) of the run's own sidecar, checked to lie within one TR; or None."""
    sidecar = _sidecar_of(image)
    value = _sidecar_value(sidecar, "StartTime")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < tr_s:
        raise BidsError(f"{sidecar}: StartTime = {value!r}; expected seconds in [0, TR = "
                        f"{tr_s}) from the start of each volume's acquisition")
    return float(value)


def _confounds_path(image: str, run: tuple[tuple[str, str], ...]) -> tuple[Path, Path]:
    """(fMRIPrep >= 20.2 name, the older ``desc-confounds_regressors`` name) beside a run.

    fMRIPrep names the table by every entity of the run, in the order of the bold file's
    name: ``sub-X[_ses-Y]_task-Z[_acq-A][_ce-C][_rec-R][_dir-D][_run-N][_echo-E]``.
    """
    name = _entity_name(run)
    folder = Path(image).parent
    return (folder / f"{name}_desc-confounds_timeseries.tsv",
            folder / f"{name}_desc-confounds_regressors.tsv")


def _raw_runs(root: Path) -> set[tuple]:
    """The run entities (see :class:`BidsRun`) of the raw dataset's bold images or events
    files."""
    from nilearn.interfaces.bids import get_bids_files

    keys = set()
    for tag, kinds in (("bold", ("nii.gz", "nii")), ("events", ("tsv",))):
        for kind in kinds:
            for path in get_bids_files(root, file_tag=tag, file_type=kind, modality_folder="func"):
                e = _parse(path)
                if "task" in e:
                    keys.add(_run_entities(e))
    return keys


def discover_bids(root, *, derivatives=None, space: str = "fsaverage5", res: str | None = None,
                  tasks: Sequence[str] | None = None,
                  subjects: Sequence[str] | None = None,
                  entities: Mapping[str, str] | None = None) -> BidsDataset:
    """Find every preprocessed run of one space in an fMRIPrep derivatives folder.

    Parameters
    ----------
    root : path
        The raw BIDS dataset (its events files and sidecars are read from here).
    derivatives : path, optional
        fMRIPrep's output, absolute or relative to ``root``; default
        ``derivatives/fmriprep``.
    space : str
        ``fsaverage5`` / ``fsaverage6`` (GIfTI) or a volume space such as
        ``MNI152NLin2009cAsym`` (``desc-preproc`` NIfTI).
    res : str, optional
        Volume resolution label (the ``res-`` entity); required when the space has several.
    tasks, subjects : sequence of str, optional
        Restrict to these labels (default: all). A label that is not in the data is an error.
    entities : mapping of str to str, optional
        Keep only the runs whose file names carry these entities, e.g. ``{"acq": "lo"}`` to
        choose one of two acquisitions of each run, or ``{"echo": "2"}``. Entities with an
        option of their own (``sub``, ``task``, ``space``, ``res``) are refused here, as is
        a value that no run has.

    Returns
    -------
    BidsDataset

    Raises
    ------
    BidsError
        No such folder, a space or resolution the derivatives do not hold, unknown
        subjects or tasks, two files for one run (e.g. ``.nii`` and ``.nii.gz``, or two
        cohorts of a space), a run without TR, or no run at all.
    """
    from nilearn.interfaces.bids import get_bids_files

    chosen = {str(k): str(v) for k, v in (entities or {}).items()}
    own = sorted(set(chosen) & {"sub", "task", "space", "res", "hemi", "desc"})
    if own:
        raise BidsError(f"entities {own} are chosen by their own options (subjects, tasks, "
                        "space, res), not by entities")
    root = Path(root)
    if not root.is_dir():
        raise BidsError(f"{root}: no such BIDS folder")
    deriv = _resolve_derivatives(root, derivatives)
    if not deriv.is_dir():
        raise BidsError(f"{deriv}: no fMRIPrep derivatives folder (give fmri.bids_derivatives, "
                        "absolute or relative to the BIDS root)")
    files = []
    for kind in _IMAGE_TYPES:
        for path in get_bids_files(deriv, file_tag="bold", file_type=kind, modality_folder="func"):
            entities = _parse(path)
            if kind != "func.gii" and entities.get("desc") != "preproc":
                continue
            if "task" in entities and "space" in entities:
                files.append((path, entities))
    spaces_found = sorted({e["space"] for _, e in files})
    if space not in spaces_found:
        raise BidsError(f"space {space!r} is not in the derivatives {deriv}; spaces found: "
                        f"{spaces_found or 'none (no preprocessed bold file)'}")
    files = [(p, e) for p, e in files if e["space"] == space]
    surface = space in SURFACE_SPACES
    if not surface:
        resolutions = sorted({e.get("res") for _, e in files}, key=str)
        if res is None and len(resolutions) > 1:
            raise BidsError(f"space {space!r} has several resolutions in {deriv}: "
                            f"{['res-' + str(r) for r in resolutions]}; choose one "
                            "(fmri.bids_res)")
        if res is not None:
            if str(res) not in resolutions:
                raise BidsError(f"space {space!r} has no res-{res} in {deriv}; resolutions "
                                f"found: {['res-' + str(r) for r in resolutions]}")
            files = [(p, e) for p, e in files if e.get("res") == str(res)]
        res = str(res) if res is not None else resolutions[0]
    for label, wanted, have in (("subject", subjects, {e["sub"] for _, e in files}),
                                ("task", tasks, {e["task"] for _, e in files}),
                                *((f"{k}- label", [v], {e[k] for _, e in files if k in e})
                                  for k, v in chosen.items())):
        unknown = sorted(set(wanted or ()) - have)
        if unknown:
            raise BidsError(f"{label}(s) {unknown} not found in {deriv} (space {space}); "
                            f"found: {sorted(have)}")
    files = [(p, e) for p, e in files if (not subjects or e["sub"] in subjects)
             and (not tasks or e["task"] in tasks)
             and all(e.get(k) == v for k, v in chosen.items())]
    grouped: dict[tuple, dict] = {}
    for path, entities in files:
        found = grouped.setdefault(_run_entities(entities), {})
        slot = entities.get("hemi", "volume")
        if slot in found:
            raise BidsError(f"{found[slot]} and {path} are both the "
                            f"{'bold' if slot == 'volume' else 'hemi-' + slot} file of run "
                            f"{_entity_name(_run_entities(entities))} in space {space}; keep "
                            "one")
        found[slot] = path
    runs, missing = [], []
    for key, found in sorted(grouped.items(), key=lambda item: _run_order(item[0])):
        if surface:
            absent = [h for h in ("L", "R") if h not in found]
            if absent:
                present = found.get("L") or found.get("R")
                missing.append(f"{present}: no hemi-{absent[0]} file beside it (space {space})")
                continue
            bold: str | dict = {"L": found["L"], "R": found["R"]}
            image, mask = found["L"], None
        else:
            bold = image = found["volume"]
            mask_path = Path(image.replace("_desc-preproc_bold", "_desc-brain_mask"))
            mask = str(mask_path) if mask_path.is_file() else None
        confounds = next((str(p) for p in _confounds_path(image, key) if p.is_file()), None)
        if confounds is None:
            missing.append(f"{image}: no confounds file beside it (expected "
                           f"{_confounds_path(image, key)[0].name})")
        tr_s, tr_source = _repetition_time(image, key, root)
        entities = dict(key)
        runs.append(BidsRun(entities["sub"], entities["task"], entities.get("run"),
                            entities.get("ses"), bold, confounds, mask, tr_s, tr_source,
                            _start_time(image, tr_s), key))
    # a raw file names its run by a subset of the run's entities (events.tsv may omit acq-)
    have = [set(r.entities) for r in runs]
    for key in sorted(_raw_runs(root), key=_run_order):
        entities = dict(key)
        if ((subjects and entities["sub"] not in subjects)
                or (tasks and entities["task"] not in tasks)
                or any(k in entities and entities[k] != v for k, v in chosen.items())
                or any(set(key) <= run for run in have)):
            continue
        missing.append(f"{_entity_name(key)}: in the raw dataset but no preprocessed bold in "
                       f"space {space} under {deriv}")
    if not runs:
        raise BidsError(f"no complete run in space {space!r} under {deriv}"
                        + (f"; missing: {missing[0]}" if missing else ""))
    for line in missing:
        logger.warning("BIDS: %s", line)
    return BidsDataset(root, deriv, space, res if not surface else None, runs, missing,
                       spaces_found)


@dataclass
class RunConfounds:
    """The confounds of one run chosen by a strategy.

    Attributes
    ----------
    values : ndarray, shape (n_volumes, n_columns), float64, or None (no column chosen)
    columns : list of str
        The chosen columns of the confounds table, in order.
    sample_mask : ndarray of int or None
        Volumes kept by scrubbing or non-steady-state removal (None: all kept).
    file : str
    """

    values: np.ndarray | None
    columns: list[str]
    sample_mask: np.ndarray | None
    file: str


@contextlib.contextmanager
def _run_files_alone(run: BidsRun):
    """The run's image(s), as nilearn's confounds lookup should see them: links, in a private
    folder, to every file of the run's folder named by the run's own entities, and to its
    confounds table and that table's JSON.

    nilearn finds the confounds table beside an image by subject, session, task and run
    alone, so a folder holding two acquisitions (``acq-``), echoes... of one run holds two
    tables it cannot choose between; the private folder holds this run's alone.
    """
    images = [run.bold] if isinstance(run.bold, str) else [run.bold["L"], run.bold["R"]]
    folder = Path(images[0]).parent
    prefix = run.label + "_"
    table = Path(run.confounds)
    own = {table, _sidecar_of(table)}
    with tempfile.TemporaryDirectory(prefix="brainalign-confounds-") as private:
        for path in folder.iterdir():
            if path.name.startswith(prefix) or path in own:
                os.symlink(path.resolve(), Path(private) / path.name)
        links = [str(Path(private) / Path(image).name) for image in images]
        yield links[0] if isinstance(run.bold, str) else links


def load_run_confounds(run: BidsRun, strategy: Sequence[str] = DEFAULT_STRATEGY,
                       **options) -> RunConfounds:
    """A run's confounds by nilearn's :func:`~nilearn.interfaces.fmriprep.load_confounds`.

    Parameters
    ----------
    run : BidsRun
    strategy : sequence of str
        nilearn's strategy names (``motion``, ``high_pass``, ``wm_csf``, ``global_signal``,
        ``compcor``, ``scrub``, ``non_steady_state``...). Empty: no confounds.
    **options
        nilearn's options (``motion="full"``, ``scrub=5``, ``fd_threshold=0.5``...).

    Raises
    ------
    BidsError
        The run has no confounds table, or nilearn cannot read it (message names the file).
    """
    if run.confounds is None:
        raise BidsError(f"{run.image}: no confounds file beside it (expected "
                        f"{_confounds_path(run.image, run.entities)[0]})")
    if not strategy:
        return RunConfounds(None, [], None, run.confounds)
    from nilearn.interfaces.fmriprep import load_confounds

    try:
        with _run_files_alone(run) as image:
            frame, sample_mask = load_confounds(image, strategy=tuple(strategy), **options)
    except (ValueError, KeyError, FileNotFoundError) as err:
        message = " ".join(str(err).split())
        raise BidsError(f"{run.confounds}: cannot select confounds {list(strategy)}: "
                        f"{message}") from None
    values = frame.to_numpy(dtype=np.float64) if frame is not None and frame.shape[1] else None
    return RunConfounds(values, list(frame.columns) if frame is not None else [],
                        None if sample_mask is None else np.asarray(sample_mask, dtype=int),
                        run.confounds)
