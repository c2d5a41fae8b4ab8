"""A synthetic naturalistic-listening dataset laid out as raw BIDS plus fMRIPrep derivatives.

:func:`make_fmriprep_dataset` writes, for a few subjects who each heard a few short stories
in several scanner runs, the files a real study would hold after fMRIPrep, with a known
story response planted in one Yeo-7 network, so that the whole discovery -> confounds ->
encoding path can be tested on realistic files and scored against the truth.

Stories
    The text of the bundled story (:data:`brainalign.stimuli.bundled.BUNDLED_STORY`, the
    package's own text) is cut at sentence ends into ``n_stories * runs_per_story``
    consecutive parts of about equal word count; story ``i`` (BIDS task
    :data:`TASK_NAMES` ``[i]``) is parts ``i * runs_per_story ...``, one part per run. Each
    part is timed with :func:`~brainalign.stimuli.speech.time_transcript` (the bundled
    speech settings with a :data:`AUDIO_LEAD_IN_S` lead-in), on that run's audio clock.
    The audio of a run lasts until :data:`AUDIO_TAIL_S` after its last word and starts
    ``onset_s`` seconds after the first volume; a run has ``ceil((onset_s + last word
    offset + 10 s) / tr_s)`` volumes. No audio file is written: ``stim_file`` in the
    events names the file a real dataset would hold.

Files (``root`` = ``out_dir``; ``<s>``, ``<t>``, ``<r>`` = subject, task, run labels)
    Raw BIDS: ``dataset_description.json``, ``participants.tsv``, ``task-<t>_bold.json``
    (``RepetitionTime``, ``TaskName``), ``sub-<s>/func/sub-<s>_task-<t>_run-<r>_events.tsv``
    (one row: onset ``onset_s``, duration = audio length, trial_type ``story``,
    stim_file ``<t>_part<r>_audio.wav``), and the word timing in the Narratives layout,
    ``stimuli/gentle/<t>_part<r>/align.json`` (a Gentle alignment, every word
    ``"case": "success"``, times on the audio clock; ``"word"`` keeps the transcript token
    with its punctuation so that :func:`brainalign.stimuli.readers.read_gentle` gives back
    exactly the story's words) next to ``transcript.txt``. No raw BOLD images are written.

    ``derivatives/fmriprep`` (``dataset_description.json`` with DatasetType derivative and
    GeneratedBy fMRIPrep), per subject and run in ``sub-<s>/func/``:

    - ``sub-<s>_task-<t>_run-<r>_hemi-{L,R}_space-fsaverage5_bold.func.gii``: 10,242
      vertices, float32, one data array per volume (intent time series, base64 binary);
      fMRIPrep puts the ``hemi`` entity before ``space`` as the BIDS entity order does.
    - ``sub-<s>_task-<t>_run-<r>_space-MNI152NLin2009cAsym_res-6_desc-preproc_bold.nii.gz``
      and ``..._res-6_desc-brain_mask.nii.gz``: **res-6 is this dataset's own label for
      its 6 mm grid** (not a TemplateFlow resolution index), 33 x 39 x 33 voxels with the
      MNI152NLin2009cAsym template origin (-96, -132, -78), sform/qform code 4 (MNI),
      zooms (6, 6, 6, TR), units mm and s. The brain mask holds the 6 mm voxels more than
      half inside nilearn's bundled 1 mm MNI152 brain mask (exact box overlap; a
      stand-in for the 2009cAsym mask); BOLD voxels outside it are 0.
    - a ``_bold.json`` sidecar (``RepetitionTime``, ``TaskName``) per BOLD file, and
      ``sub-<s>_task-<t>_run-<r>_desc-confounds_timeseries.tsv`` + ``.json`` with
      fMRIPrep's column names (see :func:`confounds_table`).

Signal model (per subject, run and target: vertex or in-mask voxel)
    ``bold = baseline * (1 + scale * x)`` with ``baseline`` about 1000 and ``scale`` about
    1 % per target, and ``x`` in units of the target's noise sd: AR(1) noise (unit
    variance) + a slow drift inside the span of the 1/128 Hz cosine regressors + the six
    motion series (rotations as mm at 50 mm) times per-target weights (so a sudden head
    move shifts the signal and raises DVARS at the volumes where FD exceeds 0.5 mm) + per-
    target weights times the latent white-matter and CSF signals of which the
    ``white_matter`` / ``csf`` confounds are affine functions + ``snr`` times the planted
    regressor (planted targets only). The planted regressor (:func:`planted_regressor`)
    is the run's word onsets (``onset_s`` + word onset on the acquisition clock, volume
    ``k`` at ``k * tr_s``) convolved with the SPM HRF (``nilearn`` ``compute_regressor``)
    and z-scored per run, the same in every subject. Surface and volume data of a run are
    separate draws sharing the subject's motion, physiological series and planted
    signal; ``global_signal``, ``dvars`` and ``std_dvars`` are computed from the volume
    data (from the surface when no volume space is written).

Planted targets
    The Yeo-7 :data:`PLANTED_NETWORK` network (it holds auditory as well as somatomotor
    cortex): on fsaverage5 its vertices (Yeo 2011 labels of
    ``brainalign.networks.load_atlas("yeo7")``); in the volume the mask voxels whose
    nearest Yeo-labelled fsaverage5 mid-thickness vertex lies within 4 mm of the voxel
    centre and belongs to that network. The volume target is projected from the surface
    atlas (always available offline, and the same network in both spaces) because the
    package's Yeo MNI volume needs a separately provided file.

Everything is deterministic for a given ``random_state``; each subject draws from its
own seed sequence ``(random_state, subject index)``, so sub-01 is the same file for file
whatever ``n_subjects`` is and the build time grows linearly with the subjects.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainalign.stimuli.bundled import BUNDLED_SPEECH, BUNDLED_STORY, stories_dir
from brainalign.stimuli.speech import split_transcript, time_transcript
from brainalign.stimuli.story import Story, Word

logger = logging.getLogger(__name__)

#: BIDS task labels of the stories, in order (``story<i>`` beyond these).
TASK_NAMES = ("lighthouse", "harbour", "storm", "ledger", "beacon", "anchor", "spire", "tide")
#: Yeo-7 network whose targets respond to the story.
PLANTED_NETWORK = "Somatomotor"
#: Surface space written (both hemispheres).
SURFACE_SPACE = "fsaverage5"
#: Volume space written, on this dataset's own 6 mm grid (``res-6``).
VOLUME_SPACE = "MNI152NLin2009cAsym"
#: The ``res`` entity of the volume files: this dataset's label for its 6 mm grid.
VOLUME_RES = "6"
#: Voxel size (mm), shape and origin (mm) of the volume grid.
VOLUME_VOXEL_MM = 6.0
VOLUME_SHAPE = (33, 39, 33)
VOLUME_ORIGIN_MM = (-96.0, -132.0, -78.0)
#: Spaces :func:`make_fmriprep_dataset` can write.
SPACES = (SURFACE_SPACE, VOLUME_SPACE)
#: Vertices per fsaverage5 hemisphere.
HEMI_VERTICES = 10242
#: Silence in each run's audio before the first word and after the last one (s).
AUDIO_LEAD_IN_S = 1.0
AUDIO_TAIL_S = 1.0
#: Scan kept after the last word of a run (s): n_volumes = ceil((onset + offset + this) / TR).
SCAN_TAIL_S = 10.0
#: Cut-off of fMRIPrep's cosine (DCT) high-pass regressors, in Hz.
HIGH_PASS_HZ = 1.0 / 128.0
#: Head radius (mm) turning rotations (rad) into displacements in Power's FD.
FD_RADIUS_MM = 50.0
#: FD (mm) above which a volume counts as a motion outlier (fMRIPrep's default).
FD_THRESHOLD_MM = 0.5
#: std_dvars above which a volume counts as a motion outlier (fMRIPrep's default).
STD_DVARS_THRESHOLD = 1.5
#: Speech settings of the story parts (the bundled ones, with a short lead-in).
SPEECH = dict(BUNDLED_SPEECH, lead_in_s=AUDIO_LEAD_IN_S)
#: Anatomical CompCor components written per mask, in fMRIPrep's order and numbering.
ACOMPCOR_COMPONENTS = (("combined", 5), ("CSF", 3), ("WM", 3))
#: Motion parameter columns, in fMRIPrep's names (translations mm, rotations rad).
MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: Pseudo-voxels of the white-matter and CSF masks whose components give aCompCor.
_WM_VOXELS, _CSF_VOXELS = 240, 80


@dataclass
class SyntheticBids:
    """A written synthetic BIDS + fMRIPrep dataset and its planted truth.

    Attributes
    ----------
    root : Path
        Raw BIDS root.
    derivatives : Path
        ``root / "derivatives" / "fmriprep"``.
    subjects : list of str
        Subject labels without ``sub-`` (``["01", "02", ...]``).
    tasks : list of str
        One BIDS task per story.
    runs : list of str
        Run labels of every task (``["1", "2"]``).
    tr_s : float
        Repetition time (s).
    onset_s : float
        Audio onset in every run, in seconds after the first volume.
    n_volumes : dict
        Task -> volumes of each run (the same for every subject).
    stories : dict
        Task -> :class:`~brainalign.stimuli.story.Story`, one story run per scanner run,
        word times on each run's audio clock, no scan attached.
    planted : dict
        Space -> where the story response was planted: ``{"fsaverage5": {"L": bool
        (10242,), "R": bool (10242,)}, "MNI152NLin2009cAsym": bool (33, 39, 33)}``.
    spaces : tuple of str
        Spaces written.
    settings : dict
        The other arguments of :func:`make_fmriprep_dataset` (snr, motion, random_state).
    """

    root: Path
    derivatives: Path
    subjects: list[str]
    tasks: list[str]
    runs: list[str]
    tr_s: float
    onset_s: float
    n_volumes: dict[str, list[int]]
    stories: dict[str, Story]
    planted: dict[str, Any]
    spaces: tuple[str, ...]
    settings: dict = field(default_factory=dict)

    def files(self, subject: str, task: str, run: str) -> dict[str, Path]:
        """Paths of one subject's run: ``events``, ``gentle``, ``confounds``,
        ``confounds_json``, ``bold_L``/``bold_R`` (surface) and ``bold``/``mask`` (volume)."""
        return _run_files(self.root, subject, task, run, self.spaces)

    def planted_regressor(self, task: str, run: str | int) -> np.ndarray:
        """The planted story regressor of a run, shape (n_volumes,), z-scored.

        ``run`` is a run label (``"1"``) or a 0-based run index.
        """
        index = self.runs.index(run) if isinstance(run, str) else int(run)
        story = self.stories[task]
        return planted_regressor(story.run_words(index), self.n_volumes[task][index],
                                 self.tr_s, self.onset_s)

    def scanned_story(self, task: str) -> Story:
        """The task's story with its scan attached: volume 0 of every run is ``onset_s``
        before the audio starts, so ``first_volume_s = -onset_s`` on the word clock."""
        return self.stories[task].with_scan(self.tr_s, self.n_volumes[task],
                                            first_volume_s=-self.onset_s)

    def volume_affine(self) -> np.ndarray:
        """Affine of the volume grid (4 x 4, mm)."""
        return volume_grid()[0].copy()

    def to_dict(self) -> dict:
        """JSON-ready description (no arrays)."""
        planted = {}
        for space, mask in self.planted.items():
            if isinstance(mask, dict):
                planted[space] = {hemi: int(np.count_nonzero(m)) for hemi, m in mask.items()}
            else:
                planted[space] = int(np.count_nonzero(mask))
        stories = {}
        for task, story in self.stories.items():
            stories[task] = [{"run": label, "n_words": len(story.run_words(i)),
                              "first_onset_s": story.run_words(i)[0].onset_s,
                              "last_offset_s": story.run_words(i)[-1].offset_s,
                              "audio_s": _audio_length(story.run_words(i))}
                             for i, label in enumerate(self.runs)]
        return {
            "root": str(self.root),
            "derivatives": str(self.derivatives),
            "subjects": list(self.subjects),
            "tasks": list(self.tasks),
            "runs": list(self.runs),
            "tr_s": self.tr_s,
            "onset_s": self.onset_s,
            "n_volumes": {task: list(n) for task, n in self.n_volumes.items()},
            "spaces": list(self.spaces),
            "stories": stories,
            "planted_network": f"yeo7 {PLANTED_NETWORK}",
            "planted_targets": planted,
            "volume_grid": {"space": VOLUME_SPACE, "res_label": VOLUME_RES,
                            "voxel_mm": VOLUME_VOXEL_MM, "shape": list(VOLUME_SHAPE),
                            "origin_mm": list(VOLUME_ORIGIN_MM),
                            "note": "res-6 is this synthetic dataset's own 6 mm grid label"},
            "settings": dict(self.settings),
        }


# --------------------------------------------------------------------------- stories

def story_parts(n_parts: int) -> list[str]:
    """The bundled story's text cut at sentence ends into ``n_parts`` consecutive parts.

    Cuts are the sentence ends nearest to equal word counts; the parts hold every word
    of the run texts, in order.
    """
    info = json.loads((stories_dir() / BUNDLED_STORY / "story.json").read_text(encoding="utf-8"))
    text = "\n\n".join((stories_dir() / BUNDLED_STORY / run["text"]).read_text(
        encoding="utf-8").strip() for run in info["runs"])
    ends = [m.end() for m in re.finditer(r"[.!?…][\"'”’)\]»]*(?=\s)", text)]
    total = len(split_transcript(text))
    if not 1 <= n_parts <= len(ends) + 1:
        raise ValueError(f"the bundled story has {len(ends) + 1} sentences; cannot cut it "
                         f"into {n_parts} parts (n_stories * runs_per_story)")
    counts = [len(split_transcript(text[:end])) for end in ends]
    cuts, previous = [], -1
    for k in range(1, n_parts):
        wanted = k * total / n_parts
        remaining = n_parts - k  # later cuts still need that many sentence ends
        choices = [i for i in range(previous + 1, len(ends) - remaining + 1)]
        best = min(choices, key=lambda i: (abs(counts[i] - wanted), i))
        cuts.append(ends[best])
        previous = best
    bounds = [0] + cuts + [len(text)]
    return [text[a:b].strip() for a, b in zip(bounds[:-1], bounds[1:])]


def task_names(n_stories: int) -> list[str]:
    """BIDS task labels of ``n_stories`` stories."""
    return [TASK_NAMES[i] if i < len(TASK_NAMES) else f"story{i + 1}" for i in range(n_stories)]


def make_stories(n_stories: int = 2, runs_per_story: int = 2) -> dict[str, Story]:
    """Task -> Story: consecutive parts of the bundled text, one part per run, timed.

    Word times are on each run's audio clock (:data:`SPEECH`); no scan is attached.
    """
    parts = story_parts(n_stories * runs_per_story)
    stories = {}
    for i, task in enumerate(task_names(n_stories)):
        texts = parts[i * runs_per_story:(i + 1) * runs_per_story]
        words = [w for run, part in enumerate(texts)
                 for w in time_transcript(part, run=run, **SPEECH)]
        stories[task] = Story(task, tuple(words),
                              source=f"brainalign bundled story {BUNDLED_STORY!r}, parts "
                                     f"{i * runs_per_story + 1}-{(i + 1) * runs_per_story} "
                                     f"of {len(parts)}",
                              metadata={"format": "synthetic", "run_texts": list(texts),
                                        "speech": dict(SPEECH)})
    return stories


def _audio_length(words: Sequence[Word]) -> float:
    return round(words[-1].offset_s + AUDIO_TAIL_S, 3)


def run_volumes(words: Sequence[Word], tr_s: float, onset_s: float) -> int:
    """Volumes of a run: ``ceil((onset_s + last word offset + 10 s) / tr_s)``."""
    return int(math.ceil(round((onset_s + words[-1].offset_s + SCAN_TAIL_S) / tr_s, 9)))


def gentle_document(text: str, words: Sequence[Word]) -> dict:
    """A Gentle alignment of one run: transcript and one aligned entry per word.

    ``startOffset``/``endOffset`` locate each word in ``text``; ``word`` keeps the
    transcript token (punctuation included), ``alignedWord`` is its lower-case letters.
    """
    entries, cursor = [], 0
    for w in words:
        pieces = w.text.split()
        start = text.find(pieces[0], cursor)
        if start < 0:
            raise ValueError(f"word {w.text!r} not found in the transcript after {cursor}")
        end = start + len(pieces[0])
        for piece in pieces[1:]:
            end = text.find(piece, end) + len(piece)
        cursor = end
        aligned = "".join(ch for ch in w.text.casefold() if ch.isalnum() or ch == "'")
        entries.append({"alignedWord": aligned or w.text.casefold(), "case": "success",
                        "end": w.offset_s, "endOffset": end, "start": w.onset_s,
                        "startOffset": start, "word": w.text})
    return {"transcript": text, "words": entries}


# --------------------------------------------------------------------------- regressors

def planted_regressor(words: Sequence[Word], n_volumes: int, tr_s: float,
                      onset_s: float) -> np.ndarray:
    """Word onsets convolved with the SPM HRF at the volume times, z-scored.

    Words are impulses at ``onset_s + word onset`` on the acquisition clock (volume
    ``k`` at ``k * tr_s``); nilearn's ``compute_regressor`` (SPM HRF, 50x oversampling).
    """
    from nilearn.glm.first_level import compute_regressor

    onsets = onset_s + np.array([w.onset_s for w in words], dtype=np.float64)
    condition = np.vstack([onsets, np.zeros_like(onsets), np.ones_like(onsets)])
    frame_times = np.arange(n_volumes, dtype=np.float64) * tr_s
    regressor = compute_regressor(condition, "spm", frame_times, con_id="story")[0][:, 0]
    return (regressor - regressor.mean()) / regressor.std()


def cosine_regressors(n_volumes: int, tr_s: float, cutoff_hz: float = HIGH_PASS_HZ) -> np.ndarray:
    """fMRIPrep's ``cosineXX`` high-pass basis: DCT-II columns below ``cutoff_hz``.

    ``floor(2 * n * tr * cutoff)`` columns ``sqrt(2/n) cos(pi (t + 1/2) k / n)``, k = 1...
    """
    order = min(n_volumes - 1, int(np.floor(2 * n_volumes * tr_s * cutoff_hz)))
    t = np.arange(n_volumes)[:, None] + 0.5
    k = np.arange(1, order + 1)[None, :]
    return np.sqrt(2.0 / n_volumes) * np.cos(np.pi * t * k / n_volumes)


def framewise_displacement(motion: np.ndarray, radius_mm: float = FD_RADIUS_MM) -> np.ndarray:
    """Power's FD: sum of |volume-to-volume change| of translations and of rotations (rad)
    times ``radius_mm``; NaN at the first volume. ``motion``: (n, 6) in fMRIPrep order."""
    change = np.abs(np.diff(motion, axis=0))
    fd = change[:, :3].sum(axis=1) + radius_mm * change[:, 3:].sum(axis=1)
    return np.concatenate([[np.nan], fd])


def simulate_motion(n_volumes: int, rng: np.random.Generator, jumps: bool = True) -> np.ndarray:
    """Head motion of one run, (n, 6): translations (mm), rotations (rad), fMRIPrep order.

    A slow random walk (about 0.03 mm and 0.00025 rad per volume) with small volume-to-
    volume jitter, re-centred on its median; with ``jumps``, 2-4 sudden moves whose FD is
    0.75-1.6 mm, each either kept (a shift) or undone at the next volume (a jerk).
    """
    walk = np.cumsum(rng.normal(0.0, 1.0, (n_volumes, 6)), axis=0)
    jitter = rng.normal(0.0, 1.0, (n_volumes, 6))
    scale = np.array([0.03] * 3 + [0.00025] * 3)
    motion = walk * scale + jitter * np.array([0.01] * 3 + [0.0001] * 3)
    if jumps and n_volumes > 8:
        n_jumps = int(rng.integers(2, 5))
        candidates = np.arange(3, n_volumes - 3)
        at = np.sort(rng.choice(candidates, size=min(n_jumps, len(candidates)), replace=False))
        for volume in at:
            move = rng.normal(0.0, 1.0, 6) * np.array([1.0] * 3 + [0.004] * 3)
            size = np.abs(move[:3]).sum() + FD_RADIUS_MM * np.abs(move[3:]).sum()
            move *= rng.uniform(0.75, 1.6) / size
            if rng.random() < 0.5:
                motion[volume:] += move
            else:
                motion[volume] += move
    return motion - np.median(motion, axis=0)


def _ar1(n: int, columns: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance stationary AR(1) columns, (n, columns) float64."""
    from brainalign.simulate.noise import ar1_filter

    drive = rng.standard_normal((n, columns))
    return ar1_filter(drive, np.zeros(n, dtype=np.int64), phi).astype(np.float64)


def _zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


# --------------------------------------------------------------------------- spaces

def volume_grid() -> tuple[np.ndarray, np.ndarray]:
    """(affine, brain mask) of the 6 mm MNI grid; the mask is a read-only bool array."""
    affine, mask = _volume_grid()
    return affine.copy(), mask


def _axis_overlap(coarse_origin: float, n_coarse: int, fine_origin: float, fine_step: float,
                  n_fine: int) -> np.ndarray:
    """(n_coarse, n_fine) share of each coarse voxel's length covered by each fine voxel."""
    half = VOLUME_VOXEL_MM / 2.0
    coarse = coarse_origin + VOLUME_VOXEL_MM * np.arange(n_coarse)
    fine = fine_origin + fine_step * np.arange(n_fine)
    low = np.maximum(coarse[:, None] - half, fine[None, :] - fine_step / 2.0)
    high = np.minimum(coarse[:, None] + half, fine[None, :] + fine_step / 2.0)
    return np.clip(high - low, 0.0, None) / VOLUME_VOXEL_MM


@functools.lru_cache(maxsize=1)
def _volume_grid() -> tuple[np.ndarray, np.ndarray]:
    """The grid and its brain mask: the share of each 6 mm voxel inside nilearn's 1 mm
    MNI152 brain mask (exact box overlap), kept where > 0.5."""
    from nilearn.datasets import load_mni152_brain_mask

    affine = np.diag([VOLUME_VOXEL_MM] * 3 + [1.0])
    affine[:3, 3] = VOLUME_ORIGIN_MM
    fine = load_mni152_brain_mask(resolution=1)
    if not np.allclose(fine.affine[:3, :3], np.diag(fine.affine[:3, :3].diagonal())) or \
            np.any(fine.affine[:3, :3].diagonal() <= 0):
        raise RuntimeError(f"expected an axis-aligned MNI152 mask grid, got {fine.affine}")
    share = (np.asarray(fine.dataobj) > 0).astype(np.float64)
    for axis in range(3):
        weights = _axis_overlap(VOLUME_ORIGIN_MM[axis], VOLUME_SHAPE[axis],
                                fine.affine[axis, 3], fine.affine[axis, axis],
                                share.shape[axis])
        share = np.moveaxis(np.tensordot(weights, share, axes=([1], [axis])), 0, axis)
    mask = share > 0.5
    mask.setflags(write=False)
    return affine, mask


@functools.lru_cache(maxsize=1)
def _yeo_fsaverage5() -> tuple[np.ndarray, list[str]]:
    from brainalign.networks import load_atlas

    atlas = load_atlas("yeo7", "fsaverage5")
    labels = np.asarray(atlas.data, dtype=np.int64)
    labels.setflags(write=False)
    return labels, list(atlas.labels)


@functools.lru_cache(maxsize=1)
def _planted_targets() -> tuple[np.ndarray, np.ndarray]:
    """(surface mask over both hemispheres (20484,), volume mask on the grid)."""
    from nilearn.datasets import load_fsaverage
    from scipy.spatial import cKDTree

    labels, names = _yeo_fsaverage5()
    network = names.index(PLANTED_NETWORK) + 1
    surface = labels == network
    mesh = load_fsaverage("fsaverage5")
    mid = np.concatenate([(mesh["pial"].parts[h].coordinates
                           + mesh["white_matter"].parts[h].coordinates) / 2.0
                          for h in ("left", "right")])
    labelled = labels > 0
    affine, mask = _volume_grid()
    ijk = np.argwhere(mask)
    centres = ijk @ affine[:3, :3].T + affine[:3, 3]
    distance, nearest = cKDTree(mid[labelled]).query(centres)
    hit = (distance <= 4.0) & (labels[labelled][nearest] == network)
    volume = np.zeros(mask.shape, dtype=bool)
    volume[tuple(ijk[hit].T)] = True
    surface.setflags(write=False)
    volume.setflags(write=False)
    return surface, volume


def planted_targets(spaces: Sequence[str] = SPACES) -> dict[str, Any]:
    """Space -> planted mask (copies): ``{"L": ..., "R": ...}`` on fsaverage5, 3-D on the grid."""
    surface, volume = _planted_targets()
    out: dict[str, Any] = {}
    if SURFACE_SPACE in spaces:
        out[SURFACE_SPACE] = {"L": surface[:HEMI_VERTICES].copy(),
                              "R": surface[HEMI_VERTICES:].copy()}
    if VOLUME_SPACE in spaces:
        out[VOLUME_SPACE] = volume.copy()
    return out


# --------------------------------------------------------------------------- file names

def _stem(subject: str, task: str, run: str) -> str:
    return f"sub-{subject}_task-{task}_run-{run}"


def _run_files(root: Path, subject: str, task: str, run: str,
               spaces: Sequence[str]) -> dict[str, Path]:
    stem = _stem(subject, task, run)
    func = Path(root) / "derivatives" / "fmriprep" / f"sub-{subject}" / "func"
    files = {
        "events": Path(root) / f"sub-{subject}" / "func" / f"{stem}_events.tsv",
        "gentle": Path(root) / "stimuli" / "gentle" / f"{task}_part{run}" / "align.json",
        "confounds": func / f"{stem}_desc-confounds_timeseries.tsv",
        "confounds_json": func / f"{stem}_desc-confounds_timeseries.json",
    }
    if SURFACE_SPACE in spaces:
        for hemi in ("L", "R"):
            files[f"bold_{hemi}"] = func / f"{stem}_hemi-{hemi}_space-{SURFACE_SPACE}_bold.func.gii"
    if VOLUME_SPACE in spaces:
        prefix = f"{stem}_space-{VOLUME_SPACE}_res-{VOLUME_RES}"
        files["bold"] = func / f"{prefix}_desc-preproc_bold.nii.gz"
        files["mask"] = func / f"{prefix}_desc-brain_mask.nii.gz"
    return files


# --------------------------------------------------------------------------- writers

def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_gifti(path: Path, data: np.ndarray, hemi: str, tr_s: float) -> None:
    import nibabel as nib

    meta = nib.gifti.GiftiMetaData({
        "AnatomicalStructurePrimary": {"L": "CortexLeft", "R": "CortexRight"}[hemi],
        "RepetitionTime": f"{tr_s:g}"})
    arrays = [nib.gifti.GiftiDataArray(np.ascontiguousarray(row, dtype=np.float32),
                                       intent="NIFTI_INTENT_TIME_SERIES",
                                       datatype="NIFTI_TYPE_FLOAT32",
                                       encoding="GIFTI_ENCODING_B64BIN")
              for row in data]
    nib.save(nib.gifti.GiftiImage(meta=meta, darrays=arrays), str(path))


def _nifti(data: np.ndarray, affine: np.ndarray, tr_s: float | None):
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    header = img.header
    header.set_xyzt_units("mm", "sec")
    img.set_sform(affine, code=4)
    img.set_qform(affine, code=4)
    if tr_s is not None:
        header.set_zooms(header.get_zooms()[:3] + (float(tr_s),))
    return img


def _write_tsv(path: Path, table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, sep="\t", index=False, na_rep="n/a", lineterminator="\n")


# --------------------------------------------------------------------------- confounds

def _expand(name: str, series: np.ndarray) -> dict[str, np.ndarray]:
    """fMRIPrep's four variants of a confound: value, _derivative1 (n/a first),
    _power2 and _derivative1_power2."""
    derivative = np.concatenate([[np.nan], np.diff(series)])
    return {name: series, f"{name}_derivative1": derivative,
            f"{name}_power2": series ** 2, f"{name}_derivative1_power2": derivative ** 2}


def dvars(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dvars, std_dvars) of (n, n_voxels) data, NaN at the first volume.

    The data are scaled so that the median voxel mean is 1000; dvars is the root mean
    square over voxels of the volume-to-volume change; std_dvars divides it by its
    expected value, the mean over voxels of ``sqrt(2 (1 - ar1)) * robust sd`` (sd from
    the interquartile range, ar1 the lag-1 autocorrelation of the demeaned series).
    """
    data = np.asarray(data, dtype=np.float64)
    mean = data.mean(axis=0)
    data = data * (1000.0 / np.median(mean))
    change = np.diff(data, axis=0)
    raw = np.sqrt(np.mean(change ** 2, axis=1))
    q75, q25 = np.percentile(data, [75, 25], axis=0)
    sd = (q75 - q25) / 1.349
    centred = data - data.mean(axis=0)
    ar1 = (centred[1:] * centred[:-1]).sum(axis=0) / np.maximum((centred ** 2).sum(axis=0), 1e-12)
    expected = np.mean(np.sqrt(2.0 * np.clip(1.0 - ar1, 0.0, None)) * sd)
    return np.concatenate([[np.nan], raw]), np.concatenate([[np.nan], raw / expected])


def _compcor(voxels: np.ndarray, cosines: np.ndarray, n_components: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """(components (n, k), singular values of all components) after high-pass + z-score."""
    design = np.column_stack([np.ones(len(voxels)), cosines])
    residual = voxels - design @ np.linalg.lstsq(design, voxels, rcond=None)[0]
    sd = residual.std(axis=0)
    residual = residual / np.where(sd > 0, sd, 1.0)
    u, s, _ = np.linalg.svd(residual, full_matrices=False)
    sign = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(u.shape[1])])
    return (u * sign)[:, :n_components], s


def confounds_table(motion: np.ndarray, fd: np.ndarray, white_matter: np.ndarray,
                    csf: np.ndarray, global_signal: np.ndarray, dvars_pair, cosines: np.ndarray,
                    compcor: Sequence[tuple[str, np.ndarray, np.ndarray]]):
    """One run's fMRIPrep confounds (DataFrame) and their JSON metadata (dict).

    Columns: ``global_signal``, ``csf``, ``white_matter`` (each with ``_derivative1``,
    ``_power2``, ``_derivative1_power2``), ``std_dvars``, ``dvars``,
    ``framewise_displacement``, ``a_comp_cor_XX`` (combined, then CSF, then WM masks,
    numbered on), ``cosineXX``, the six motion parameters with their three variants,
    and ``motion_outlierXX`` (one-hot, FD > 0.5 mm or std_dvars > 1.5). Derivatives,
    FD and DVARS are n/a at the first volume.
    """
    import pandas as pd

    columns: dict[str, np.ndarray] = {}
    columns.update(_expand("global_signal", global_signal))
    columns.update(_expand("csf", csf))
    columns.update(_expand("white_matter", white_matter))
    raw_dvars, std_dvars = dvars_pair
    columns["std_dvars"] = std_dvars
    columns["dvars"] = raw_dvars
    columns["framewise_displacement"] = fd
    metadata: dict[str, dict] = {}
    number = 0
    for mask_name, components, singular in compcor:
        variance = singular ** 2 / np.sum(singular ** 2)
        cumulative = np.cumsum(variance)
        for k in range(components.shape[1]):
            name = f"a_comp_cor_{number:02d}"
            columns[name] = components[:, k]
            metadata[name] = {"CumulativeVarianceExplained": float(cumulative[k]),
                              "Mask": mask_name, "Method": "aCompCor", "Retained": True,
                              "SingularValue": float(singular[k]),
                              "VarianceExplained": float(variance[k])}
            number += 1
    for k in range(cosines.shape[1]):
        columns[f"cosine{k:02d}"] = cosines[:, k]
    for j, name in enumerate(MOTION_COLUMNS):
        columns.update(_expand(name, motion[:, j]))
    with np.errstate(invalid="ignore"):
        outliers = np.flatnonzero((fd > FD_THRESHOLD_MM) | (std_dvars > STD_DVARS_THRESHOLD))
    for k, volume in enumerate(outliers):
        one_hot = np.zeros(len(fd), dtype=np.int64)
        one_hot[volume] = 1
        columns[f"motion_outlier{k:02d}"] = one_hot
    return pd.DataFrame(columns), metadata


# --------------------------------------------------------------------------- simulation

@dataclass
class _Targets:
    """Per-subject, per-space properties of the targets (fixed across runs)."""

    planted: np.ndarray      # (T,) bool
    baseline: np.ndarray     # (T,)
    scale: np.ndarray        # (T,) noise sd as a fraction of the baseline
    motion_weights: np.ndarray  # (6, T) per mm of motion
    physio_weights: np.ndarray  # (2, T) white matter, csf
    ar_phi: float


def _draw_targets(planted: np.ndarray, rng: np.random.Generator) -> _Targets:
    n = len(planted)
    return _Targets(planted=planted,
                    baseline=1000.0 * np.exp(rng.normal(0.0, 0.12, n)),
                    scale=rng.uniform(0.008, 0.02, n),
                    motion_weights=rng.normal(0.0, 5.0, (6, n)),
                    physio_weights=rng.normal(0.0, [[0.5], [0.7]], (2, n)),
                    ar_phi=float(rng.uniform(0.25, 0.45)))


def _bold(targets: _Targets, signal: np.ndarray, motion_mm: np.ndarray, physio_z: np.ndarray,
          cosines: np.ndarray, snr: float, motion_artefacts: bool,
          rng: np.random.Generator) -> np.ndarray:
    """(n, T) float32 BOLD of one space and run (see the module docstring)."""
    n, n_targets = len(signal), len(targets.planted)
    x = _ar1(n, n_targets, targets.ar_phi, rng)
    if cosines.shape[1]:
        x += (cosines * np.sqrt(n / 2.0)) @ rng.normal(0.0, 1.5, (cosines.shape[1], n_targets))
    if motion_artefacts:
        x += motion_mm @ targets.motion_weights
    x += physio_z @ targets.physio_weights
    x[:, targets.planted] += snr * signal[:, None]
    return (targets.baseline * (1.0 + targets.scale * x)).astype(np.float32)


def _subject_run(rng: np.random.Generator, n: int, tr_s: float, signal: np.ndarray,
                 spaces: Sequence[str], targets: dict[str, _Targets], snr: float,
                 motion: bool) -> tuple[dict[str, np.ndarray], Any, dict]:
    """Simulate one run of one subject: BOLD per space, confounds table and metadata."""
    head = simulate_motion(n, rng, jumps=motion)
    fd = framewise_displacement(head)
    motion_mm = head * np.array([1.0] * 3 + [FD_RADIUS_MM] * 3)
    motion_mm = motion_mm - motion_mm.mean(axis=0)
    cosines = cosine_regressors(n, tr_s)
    # latent white-matter / CSF fluctuations (slow AR + a little motion)
    latent = _ar1(n, 2, 0.8, rng) + motion_mm @ rng.normal(0.0, 0.15, (6, 2))
    physio_z = _zscore(latent)
    white_matter = 560.0 * (1.0 + 0.004 * latent[:, 0])
    csf = 880.0 * (1.0 + 0.01 * latent[:, 1])
    bold = {}
    order = [s for s in (VOLUME_SPACE, SURFACE_SPACE) if s in spaces]
    for space in order:
        bold[space] = _bold(targets[space], signal, motion_mm, physio_z, cosines,
                            snr, motion, rng)
    # confounds computed from the volume (fMRIPrep: native BOLD in the brain mask)
    source = bold[order[0]]
    global_signal = source.mean(axis=1, dtype=np.float64)
    dvars_pair = dvars(source)
    # aCompCor from pseudo-voxels of the WM and CSF masks
    tissue = []
    for column, n_vox in ((0, _WM_VOXELS), (1, _CSF_VOXELS)):
        weights = rng.normal(1.0, 0.5, (1, n_vox))
        voxels = (latent[:, [column]] @ weights + motion_mm @ rng.normal(0.0, 0.3, (6, n_vox))
                  + (cosines * np.sqrt(n / 2.0)) @ rng.normal(0.0, 1.0, (cosines.shape[1], n_vox))
                  + rng.standard_normal((n, n_vox)))
        tissue.append(voxels)
    compcor = []
    for mask_name, k in ACOMPCOR_COMPONENTS:
        voxels = {"combined": np.hstack(tissue), "WM": tissue[0], "CSF": tissue[1]}[mask_name]
        components, singular = _compcor(voxels, cosines, k)
        compcor.append((mask_name, components, singular))
    table, metadata = confounds_table(head, fd, white_matter, csf, global_signal, dvars_pair,
                                      cosines, compcor)
    return bold, table, metadata


def _derivatives_description() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        brainalign_version = version("brainalign")
    except PackageNotFoundError:  # pragma: no cover - source tree without metadata
        brainalign_version = "unknown"
    return {
        "Name": "fMRIPrep - fMRI PREProcessing workflow (synthetic)",
        "BIDSVersion": "1.8.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {"Name": "fMRIPrep", "Version": "synthetic",
             "Description": "fMRIPrep's output layout and confound names; the data are "
                            "simulated by brainalign.simulate.bids, not preprocessed"},
            {"Name": "brainalign", "Version": brainalign_version,
             "Description": "brainalign.simulate.bids.make_fmriprep_dataset"},
        ],
    }


def make_fmriprep_dataset(out_dir, *, n_subjects: int = 3, n_stories: int = 2,
                          runs_per_story: int = 2,
                          spaces: Sequence[str] = (SURFACE_SPACE, VOLUME_SPACE),
                          tr_s: float = 2.0, onset_s: float = 6.0, snr: float = 0.6,
                          motion: bool = True, random_state: int = 0) -> SyntheticBids:
    """Write a synthetic raw BIDS + fMRIPrep derivatives dataset with a planted response.

    See the module docstring for the layout, the signal model and the planted targets.

    Parameters
    ----------
    out_dir : path-like
        The raw BIDS root (created; files in it are replaced).
    n_subjects : int
        Subjects ``01``, ``02``, ...
    n_stories, runs_per_story : int
        Stories (BIDS tasks) and runs per story, cut from the bundled text.
    spaces : sequence of {"fsaverage5", "MNI152NLin2009cAsym"}
        Output spaces (at least one).
    tr_s : float
        Repetition time (s).
    onset_s : float
        Audio onset after the first volume of each run (s, >= 0).
    snr : float
        Planted signal sd over the AR(1) noise sd, in every planted target.
    motion : bool
        True: 2-4 sudden head moves per run (FD > 0.5 mm) and motion artefacts in the
        BOLD. False: small drifting motion traces only, and no motion in the BOLD.
    random_state : int
        Seed; subject ``i`` draws from ``SeedSequence([random_state, i])``.

    Returns
    -------
    SyntheticBids

    Notes
    -----
    BLAS is held to one thread while building (threadpoolctl). About 1.3 s and 41 MB per
    subject with the defaults (4 runs of 71-76 volumes); progress is logged per subject
    at INFO.
    """
    with _single_thread_blas():
        return _make_dataset(out_dir, n_subjects=n_subjects, n_stories=n_stories,
                             runs_per_story=runs_per_story, spaces=spaces, tr_s=tr_s,
                             onset_s=onset_s, snr=snr, motion=motion,
                             random_state=random_state)


def _single_thread_blas():
    """One BLAS thread while building: the matrices are small, and several threads on a
    busy machine make each small SVD/least-squares call hundreds of times slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _make_dataset(out_dir, *, n_subjects, n_stories, runs_per_story, spaces, tr_s, onset_s,
                  snr, motion, random_state) -> SyntheticBids:
    import pandas as pd

    spaces = tuple(dict.fromkeys(str(s) for s in spaces))
    unknown = [s for s in spaces if s not in SPACES]
    if not spaces or unknown:
        raise ValueError(f"spaces must be a non-empty subset of {SPACES}, got {list(spaces)}")
    if int(n_subjects) < 1 or int(n_stories) < 1 or int(runs_per_story) < 1:
        raise ValueError("n_subjects, n_stories and runs_per_story must be >= 1, got "
                         f"{n_subjects}, {n_stories}, {runs_per_story}")
    if not tr_s > 0 or not onset_s >= 0 or not snr >= 0:
        raise ValueError(f"need tr_s > 0, onset_s >= 0 and snr >= 0; got {tr_s}, {onset_s}, {snr}")
    tr_s, onset_s, snr = float(tr_s), float(onset_s), float(snr)
    root = Path(out_dir)
    derivatives = root / "derivatives" / "fmriprep"
    subjects = [f"{i + 1:02d}" for i in range(int(n_subjects))]
    runs = [str(r + 1) for r in range(int(runs_per_story))]
    stories = make_stories(int(n_stories), int(runs_per_story))
    tasks = list(stories)
    n_volumes = {task: [run_volumes(stories[task].run_words(r), tr_s, onset_s)
                        for r in range(len(runs))] for task in tasks}
    signals = {(task, r): planted_regressor(stories[task].run_words(r), n_volumes[task][r],
                                            tr_s, onset_s)
               for task in tasks for r in range(len(runs))}
    planted = planted_targets(spaces)
    affine, brain = volume_grid()
    settings = {"n_subjects": int(n_subjects), "n_stories": int(n_stories),
                "runs_per_story": int(runs_per_story), "snr": snr, "motion": bool(motion),
                "random_state": int(random_state)}

    # raw BIDS: descriptions, stimuli, events
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "dataset_description.json", {
        "Name": "brainalign synthetic naturalistic listening dataset",
        "BIDSVersion": "1.8.0", "DatasetType": "raw", "License": "CC0",
        "GeneratedBy": [{"Name": "brainalign",
                         "Description": "brainalign.simulate.bids.make_fmriprep_dataset"}],
        "HowToAcknowledge": "Synthetic data; the story text is brainalign's bundled story."})
    _write_tsv(root / "participants.tsv",
               pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects]}))
    _write_json(root / "code" / "synthetic_dataset.json", {
        "generator": "brainalign.simulate.bids.make_fmriprep_dataset", **settings,
        "spaces": list(spaces), "tr_s": tr_s, "onset_s": onset_s,
        "planted_network": f"yeo7 {PLANTED_NETWORK}",
        "volume_grid_note": "res-6 is this synthetic dataset's own 6 mm grid label"})
    for task in tasks:
        _write_json(root / f"task-{task}_bold.json", {"RepetitionTime": tr_s, "TaskName": task})
        for r, run in enumerate(runs):
            words = stories[task].run_words(r)
            text = stories[task].metadata["run_texts"][r]
            folder = root / "stimuli" / "gentle" / f"{task}_part{run}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "transcript.txt").write_text(text + "\n", encoding="utf-8")
            _write_json(folder / "align.json", gentle_document(text, words))
    _write_json(derivatives / "dataset_description.json", _derivatives_description())

    for index, subject in enumerate(subjects):
        rng = np.random.default_rng(np.random.SeedSequence([int(random_state), index]))
        targets = {}
        if VOLUME_SPACE in spaces:
            targets[VOLUME_SPACE] = _draw_targets(planted[VOLUME_SPACE][brain], rng)
        if SURFACE_SPACE in spaces:
            both = np.concatenate([planted[SURFACE_SPACE]["L"], planted[SURFACE_SPACE]["R"]])
            targets[SURFACE_SPACE] = _draw_targets(both, rng)
        for task in tasks:
            for r, run in enumerate(runs):
                n = n_volumes[task][r]
                files = _run_files(root, subject, task, run, spaces)
                events = pd.DataFrame({"onset": [onset_s],
                                       "duration": [_audio_length(stories[task].run_words(r))],
                                       "trial_type": ["story"],
                                       "stim_file": [f"{task}_part{run}_audio.wav"]})
                _write_tsv(files["events"], events)
                bold, table, metadata = _subject_run(rng, n, tr_s, signals[(task, r)], spaces,
                                                     targets, snr, motion)
                _write_tsv(files["confounds"], table)
                _write_json(files["confounds_json"], metadata)
                sidecar = {"RepetitionTime": tr_s, "TaskName": task}
                if SURFACE_SPACE in spaces:
                    data = bold[SURFACE_SPACE]
                    for hemi, part in (("L", data[:, :HEMI_VERTICES]),
                                       ("R", data[:, HEMI_VERTICES:])):
                        _write_gifti(files[f"bold_{hemi}"], part, hemi, tr_s)
                        _write_json(files[f"bold_{hemi}"].with_name(
                            files[f"bold_{hemi}"].name.replace(".func.gii", ".json")), sidecar)
                if VOLUME_SPACE in spaces:
                    import nibabel as nib

                    volume = np.zeros(VOLUME_SHAPE + (n,), dtype=np.float32)
                    volume[brain] = bold[VOLUME_SPACE].T
                    nib.save(_nifti(volume, affine, tr_s), str(files["bold"]))
                    nib.save(_nifti(brain.astype(np.uint8), affine, None), str(files["mask"]))
                    _write_json(files["bold"].with_name(
                        files["bold"].name.replace(".nii.gz", ".json")),
                        dict(sidecar, SkullStripped=False))
        logger.info("synthetic fMRIPrep dataset: subject %s (%d/%d) written to %s", subject,
                    index + 1, len(subjects), derivatives)
    return SyntheticBids(root=root, derivatives=derivatives, subjects=subjects, tasks=tasks,
                         runs=runs, tr_s=tr_s, onset_s=onset_s, n_volumes=n_volumes,
                         stories=stories, planted=planted, spaces=spaces, settings=settings)
