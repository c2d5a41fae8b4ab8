"""What a study read, as hashed into the stage cache keys: the stories' words and the files.

A stage's cache key hashes the configuration tables it depends on
(:data:`brainalign.pipeline.config.STAGE_DEPENDENCIES`). Paths alone do not say what a
stage computed from: a corrected transcript, re-preprocessed fMRI or a retrained checkpoint
written to the same path would be silently served from the cache. :func:`study_inputs`
therefore adds an ``inputs`` table (:data:`~brainalign.pipeline.config.INPUTS_TABLE`):

- ``stories``: a hash of each story's words (text, onset, offset, run), whatever file or
  BIDS events they came from;
- ``model``: each local model path's fingerprint (hub ids and registry names as named);
- ``fmri``: the fingerprints of the fMRI files (``fmri.paths``, ``fmri.mask``, or every BOLD
  series, confounds table and mask a BIDS design uses);
- ``bands``: each extra band's table; ``atlas``: a network atlas given as a file.

A file's fingerprint is its size and modification time (nanoseconds): cheap for
gigabytes of BOLD, and changed by any rewrite; a folder's is that of every file in it.
"""

from __future__ import annotations

from typing import Any

from brainalign.provenance import file_fingerprint as fingerprint

def _fingerprints(value: Any) -> Any:
    """Fingerprints of the paths in a nested list / dict of paths, same shape."""
    if isinstance(value, (list, tuple)):
        return [_fingerprints(item) for item in value]
    if isinstance(value, dict):
        return {key: _fingerprints(item) for key, item in sorted(value.items())}
    if isinstance(value, str) and value:
        return fingerprint(value)
    return None


def study_inputs(config: dict, stories: list, design=None) -> dict[str, Any]:
    """The ``inputs`` table of a study (see the module docstring).

    Parameters
    ----------
    config : dict
        The validated configuration (paths resolved).
    stories : list of Story
        The stories the study reads, in order.
    design : BidsDesign, optional
        For ``fmri.source = "bids"``: the runs whose files are fingerprinted.
    """
    fmri = config["fmri"]
    if design is not None:
        files = [[run.bold, run.confounds, run.mask] for runs in design.runs.values()
                 for run in runs]
    else:
        files = [fmri.get("paths", []), fmri.get("mask", "")]
    atlas = config["networks"]["atlas"]
    return {
        "stories": [[story.name, story.words_hash()] for story in stories],
        "model": [[name, fingerprint(name)] for name in config["model"]["names"]],
        "fmri": _fingerprints(files),
        "bands": [[entry["name"], fingerprint(entry["path"])]
                  for entry in config["encoding"]["extra_bands"]],
        "atlas": fingerprint(atlas) if atlas not in ("", "none") else None,
    }
