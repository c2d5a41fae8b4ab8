"""Loader for the Brennan et al. (2016) "Alice in Wonderland" ROI fMRI data set.

Brennan, Stabler, Van Wagenen, Luh & Hale (2016), Brain & Language 157-158: 81-94
(CC BY 4.0). Subjects listened to chapter 1 of *Alice's Adventures in Wonderland* (about
12 min). The public release holds, per subject, 362 TRs (TR 2 s, the first 10 volumes
discarded) of 6 ROI time courses (6 mm or 10 mm spheres: LATL RATL LPTL LIPL LPreM LIFG),
a word-rate and a sound-power regressor and SPM motion parameters; the study's 12
HRF-convolved predictors (372 rows from stimulus time 0, column names from the release's
README.txt); and the hand-corrected word TextGrid (read with
:func:`brainalign.stimuli.load_story`).

Timing: the TextGrid's clock starts with the acquisition (the padded audio), so the first
kept volume, volume 10, is at stimulus time ``FIRST_VOLUME_S`` = 10 x 2 s = 20 s and
time-course row ``k`` covers ``20 + 2k .. 22 + 2k`` s; the story carries this scan. The
tests check it against the release's own word-rate regressor (the TextGrid word onsets
convolved with the HRF on this grid correlate with it at r > 0.95, and a grid shifted by
10 TRs does not).

The files are not shipped with brainalign: pass their folder, or set
``BRAINALIGN_SHARED_DATA`` to the folder that holds ``alice_brennan2016``. Subjects whose
time course is constant in any ROI are excluded, with the reason recorded in
``AliceData.excluded`` and logged (s33 in the public release). Plain numpy text reading.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brainalign.stimuli.story import Story

logger = logging.getLogger(__name__)

ROI_NAMES = ("LATL", "RATL", "LPTL", "LIPL", "LPreM", "LIFG")
TR_S = 2.0
N_DISCARDED_VOLUMES = 10
N_VOLUMES = 362
#: Stimulus time (s, TextGrid clock) of the first kept volume.
FIRST_VOLUME_S = N_DISCARDED_VOLUMES * TR_S
PREDICTOR_FILE = "sept18-generic-predictors-under-hrf-with-logfrqhal.txt"
TEXTGRID_FILE = "alice_stim_shared/DownTheRabbitHoleFinal_exp120_pad_1.TextGrid"
DATA_DIR = "alice_data_shared"
DATASET_NAME = "alice_brennan2016"


def default_alice_path() -> Path:
    """``$BRAINALIGN_SHARED_DATA/alice_brennan2016``, else ``../shared/data/alice_brennan2016``
    beside the repository checkout."""
    root = os.environ.get("BRAINALIGN_SHARED_DATA")
    if root:
        return Path(root) / DATASET_NAME
    return Path(__file__).resolve().parents[3] / "shared" / "data" / DATASET_NAME


@dataclass
class AliceData:
    """The Alice ROI data of the usable subjects, on one TR grid.

    Attributes
    ----------
    subjects : tuple of str
        Usable subject ids ("s18", ...), in the order of ``timecourses``.
    timecourses : ndarray, shape (n_subjects, 362, 6)
        Raw ROI time courses (arbitrary scanner units); row k is volume k after the 10
        discarded ones.
    roi_names : tuple of str
    rate : ndarray, shape (n_subjects, 362)
        Each subject's word-rate regressor file (same TR grid as ``timecourses``).
    predictors : ndarray, shape (372, 12)
        The study's HRF-convolved predictors, from stimulus time 0 (row 0 = 0 s).
    predictor_names : tuple of str
        From the release's README.txt.
    story : Story or None
        The TextGrid words (times from the start of the padded audio), with the scan
        ``tr_s=2``, ``n_volumes=(362,)``, ``first_volume_s=(20.0,)`` attached.
    excluded : dict
        Subject id -> reason it was left out.
    sphere_mm : int
    tr_s : float
    path : Path
    first_volume_s : float
        Stimulus time (s) of row 0 of ``timecourses`` (:data:`FIRST_VOLUME_S`).
    """

    subjects: tuple[str, ...]
    timecourses: np.ndarray
    roi_names: tuple[str, ...]
    rate: np.ndarray
    predictors: np.ndarray
    predictor_names: tuple[str, ...]
    story: Story | None
    excluded: dict = field(default_factory=dict)
    sphere_mm: int = 6
    tr_s: float = TR_S
    path: Path | None = None
    first_volume_s: float = FIRST_VOLUME_S

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    def predictors_on_scan(self) -> np.ndarray:
        """The 12 published predictors on the time-course grid, shape (362, 12).

        The predictors start at stimulus time 0 while the time courses start after the
        discarded volumes, so rows ``N_DISCARDED_VOLUMES:`` are kept.
        """
        return self.predictors[N_DISCARDED_VOLUMES:N_DISCARDED_VOLUMES + self.timecourses.shape[1]]


def _read_predictor_names(readme: Path, n_columns: int) -> tuple[str, ...]:
    text = readme.read_text(errors="replace")
    match = re.search(r"column labels are:\s*\n\s*([^\n]+)", text.split(PREDICTOR_FILE.split("-")[0])[-1])
    names = tuple(match.group(1).split()) if match else ()
    if len(names) != n_columns:
        raise ValueError(f"{readme}: expected {n_columns} predictor names after 'column labels "
                         f"are:' in the predictor section, found {len(names)}")
    return names


def load_alice(path: str | os.PathLike | None = None, sphere_mm: int = 6,
               with_story: bool = True) -> AliceData:
    """Read the Brennan 2016 Alice ROI data.

    Parameters
    ----------
    path : path-like, optional
        The ``alice_brennan2016`` folder; default :func:`default_alice_path`.
    sphere_mm : {6, 10}
        ROI sphere radius.
    with_story : bool
        Also read the word TextGrid through :func:`brainalign.stimuli.load_story`.

    Returns
    -------
    AliceData

    Raises
    ------
    FileNotFoundError
        When the folder or an expected file is missing (the message says where the data
        come from).
    """
    root = Path(path) if path is not None else default_alice_path()
    data_dir = root / DATA_DIR
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"Alice data not found at {root} (expected {DATA_DIR}/ inside). Get the Brennan "
            "2016 release (CC BY 4.0) and pass its folder as path=, or set "
            "BRAINALIGN_SHARED_DATA to the folder that holds alice_brennan2016/.")
    if sphere_mm not in (6, 10):
        raise ValueError(f"sphere_mm must be 6 or 10, got {sphere_mm!r}")
    files = sorted((data_dir / f"{sphere_mm}mm").glob("s*-timecourses.txt"))
    if not files:
        raise FileNotFoundError(f"no s*-timecourses.txt files in {data_dir / f'{sphere_mm}mm'}")

    subjects, timecourses, rates, excluded = [], [], [], {}
    for file in files:
        subject = file.name.split("-")[0]
        values = np.loadtxt(file, ndmin=2)
        if values.shape != (N_VOLUMES, len(ROI_NAMES)):
            raise ValueError(f"{file}: expected {N_VOLUMES} TRs x {len(ROI_NAMES)} ROIs, got {values.shape}")
        constant = [roi for roi, column in zip(ROI_NAMES, values.T) if np.ptp(column) == 0]
        if constant or not np.isfinite(values).all():
            reason = (f"constant time course in {', '.join(constant)}" if constant
                      else "non-finite values")
            excluded[subject] = reason
            logger.warning("Alice subject %s excluded: %s", subject, reason)
            continue
        rate_file = data_dir / f"{subject}-rate.txt"
        if not rate_file.exists():
            raise FileNotFoundError(f"word-rate file missing for {subject}: {rate_file}")
        rate = np.loadtxt(rate_file)
        if rate.shape != (N_VOLUMES,):
            raise ValueError(f"{rate_file}: expected {N_VOLUMES} rows, got {rate.shape}")
        subjects.append(subject)
        timecourses.append(values)
        rates.append(rate)

    predictors = np.loadtxt(data_dir / PREDICTOR_FILE, ndmin=2)
    names = _read_predictor_names(data_dir / "README.txt", predictors.shape[1])
    story = None
    if with_story:
        from brainalign.stimuli import load_story

        story = load_story(root / TEXTGRID_FILE, name="alice").with_scan(
            TR_S, (N_VOLUMES,), first_volume_s=FIRST_VOLUME_S)
    logger.info("Alice: %d usable subjects, %d excluded (%s)", len(subjects), len(excluded),
                ", ".join(excluded) or "none")
    return AliceData(tuple(subjects), np.stack(timecourses), ROI_NAMES, np.stack(rates),
                     predictors, names, story, excluded, sphere_mm, TR_S, root)
