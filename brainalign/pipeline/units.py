"""Independent units of a study, as module-level functions that Dask workers can import.

Each unit is a small dataclass of inputs and a function of it; :func:`brainalign.pipeline.
scale.map_units` runs a list of them serially or on a Dask cluster with identical results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from brainalign.encoding import fit_encoding
from brainalign.encoding.result import EncodingResult
from brainalign.stimuli.story import Story


@dataclass
class EncodingUnit:
    """One subject's (or one space's) encoding fit.

    Attributes
    ----------
    name : str
        Subject / space label carried into the result's provenance.
    X : ndarray (n_tr, n_features) or dict of name -> Band
        Regressors on the TR grid (e.g. the study's feature bands).
    Y : ndarray, shape (n_tr, n_targets), or str
        Brain time courses, or a subject's ``.npz`` file read by the unit itself (``bold``,
        and when present ``confounds`` and ``keep``: the volumes scrubbing keeps), so that
        only the subject being fitted is in memory.
    runs : ndarray of int, shape (n_tr,)
    options : dict
        Keyword arguments of :func:`brainalign.encoding.fit_encoding` (delays, n_perm...).
    out : str, optional
        Folder the result is saved to (then :func:`encode_unit` returns the folder, not
        the result).
    """

    name: str
    X: Any
    Y: Any
    runs: np.ndarray
    options: dict = field(default_factory=dict)
    out: str | None = None


def encode_unit(unit: EncodingUnit) -> EncodingResult | str:
    """Fit one unit's encoding model (deterministic given ``options['random_state']``)."""
    options = dict(unit.options)
    provenance = dict(options.pop("provenance", None) or {}, unit=unit.name)
    Y = unit.Y
    if isinstance(Y, str):
        with np.load(Y) as arrays:
            Y = arrays["bold"]
            if "confounds" in arrays and arrays["confounds"].shape[1]:
                options["confounds"] = arrays["confounds"].astype(np.float64)
            if "keep" in arrays and not arrays["keep"].all():
                options["sample_mask"] = np.flatnonzero(arrays["keep"])
    result = fit_encoding(unit.X, Y, unit.runs, provenance=provenance, **options)
    if unit.out is None:
        return result
    return str(result.save(unit.out))


@dataclass
class RecordingUnit:
    """One (model, story) recording.

    Attributes
    ----------
    model : str
        Registry name, path or hub id (each worker loads the model itself).
    story : Story
    out_dir : str
        Folder the recording's own folder is written into; on a remote cluster it must be
        on a file system the workers share.
    options : dict
        Keyword arguments of :func:`brainalign.record.record_story` (sites, layers...).
    device : str
        torch device of the worker.
    """

    model: str
    story: Story
    sites: Sequence[str]
    out_dir: str
    options: dict = field(default_factory=dict)
    device: str = "cpu"


def record_unit(unit: RecordingUnit) -> str:
    """Record one story with one model; the recording's folder."""
    from brainalign.models.registry import load_model
    from brainalign.record import record_story

    loaded = load_model(unit.model, device=unit.device)
    return str(record_story(loaded, unit.story, list(unit.sites), unit.out_dir,
                            progress=False, **unit.options))
