"""Study configuration: a TOML file describing every stage, validated against one schema.

A study file has one table per stage (``[study]``, ``[model]``, ``[stories]``, ``[fmri]``,
``[timecourse]``, ``[patterns]``, ``[encoding]``, ``[networks]``, ``[interventions]``,
``[outputs]``, ``[compute]``). Every key has a type, a default and, where it is a
choice, the allowed values; an unknown table or key, a wrong type or a value outside the
allowed set raises :class:`ConfigError` naming the key (``patterns.method``) and what is
allowed. :func:`stage_config` gives the part of the configuration each stage depends
on, which is what the stage cache hashes (changing ``patterns.n_atoms`` re-runs the
patterns stage and everything after it, but reuses the recordings).

Parsing uses the standard library's ``tomllib`` (Python >= 3.11) or ``tomli``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(ValueError):
    """An invalid study configuration; the message names the key and what is allowed."""


@dataclass(frozen=True)
class Key:
    """Schema of one configuration key."""

    types: tuple[type, ...]
    default: Any
    choices: tuple | None = None
    doc: str = ""


_STR, _INT, _FLOAT, _BOOL, _LIST = (str,), (int,), (int, float), (bool,), (list,)

SCHEMA: dict[str, dict[str, Key]] = {
    "study": {
        "name": Key(_STR, "study", doc="Name used in output file names."),
        "out": Key(_STR, "brainalign-study", doc="Output directory (relative to the config file)."),
        "seed": Key(_INT, 0, doc="Seed for every random step."),
    },
    "model": {
        "names": Key(_LIST, ["smollm2-135m"], doc="Registry names, paths or hub ids."),
        "sites": Key(_LIST, ["mlp.out"], doc="Neuron sites to record."),
        "layers": Key((str, list), "all", doc='"all" or a list of layer indices.'),
        "context_tokens": Key(_INT, 256, doc="Tokens of context each word is read with."),
        "pooling": Key(_STR, "mean", ("mean", "last", "first"), "How tokens pool into a word."),
        "device": Key(_STR, "auto", doc='"auto" (CUDA when available), "cpu", "cuda:0"...'),
    },
    "stories": {
        "bundled": Key(_BOOL, True, doc="Include the bundled story."),
        "paths": Key(_LIST, [], doc="Timing files (TextGrid, Gentle JSON, TSV/CSV)."),
        "tr_s": Key(_FLOAT, 2.0, doc="Repetition time of the fMRI, seconds."),
    },
    "fmri": {
        "source": Key(_STR, "simulated", ("simulated", "nifti", "gifti", "roi"),
                      "Where the brain data come from."),
        "spaces": Key(_LIST, ["fsaverage5"], doc="Target spaces of a simulation: "
                      "fsaverage5, MNI152_3mm, roi."),
        "paths": Key(_LIST, [], doc="Data files for nifti/gifti/roi sources."),
        "mask": Key(_STR, "", doc="Brain mask (nifti source)."),
        "snr": Key(_FLOAT, 1.0, doc="Simulation: signal-to-noise ratio (signal sd / noise sd)."),
        "noise": Key(_STR, "ar1", ("white", "ar1", "rest"), "Simulation: noise model."),
        "n_subjects": Key(_INT, 2, doc="Simulation: number of subjects."),
        "n_planted": Key(_INT, 4, doc="Simulation: networks that respond to a pattern."),
    },
    "timecourse": {
        "method": Key(_STR, "lanczos", ("lanczos", "hrf"), "Word -> TR resampling."),
        "zscore": Key(_BOOL, True, doc="z-score each run."),
        "trim": Key(_LIST, [0, 0], doc="TRs dropped at the start and end of each run."),
    },
    "patterns": {
        "method": Key(_STR, "dictionary", ("dictionary", "kmeans", "ica"),
                      "Decomposition giving the atoms."),
        "n_atoms": Key(_INT, 64, doc="Number of atoms (K)."),
        "alpha": Key(_FLOAT, 0.1, doc="L1 penalty of the codes (dictionary learning), in "
                     "correlation units: codes below it are zero."),
    },
    "encoding": {
        "delays": Key(_LIST, [1, 2, 3, 4], doc="FIR delays in TRs."),
        "n_permutations": Key(_INT, 200, doc="Permutations of the significance null."),
        "fdr_q": Key(_FLOAT, 0.05, doc="Benjamini-Hochberg level."),
    },
    "networks": {
        "atlas": Key(_STR, "yeo7", doc="yeo7, yeo17, seitzman, dosenbach, cole-anticevic or a path."),
        "null": Key(_STR, "auto", ("auto", "spin", "volume", "permutation"),
                    "Spatial null (auto: spin on surfaces, smooth surrogates in volumes)."),
        "n_null": Key(_INT, 200, doc="Null maps per pattern."),
        "n_shifts": Key(_INT, 1000, doc="Circular shifts per pattern of the temporal test "
                        "(unique held-out r on network signals); 0: spatial null only."),
        "alpha": Key(_FLOAT, 0.05, doc="Level at which a pattern is assigned a network."),
    },
    "interventions": {
        "study_b": Key(_BOOL, False, doc="Run a study-B lesion check."),
        "n_components": Key(_INT, 10, doc="ICA components for functional networks."),
        "z_threshold": Key(_FLOAT, 3.6, doc="z threshold of network membership."),
        "n_controls": Key(_INT, 3, doc="Random control sets per condition."),
    },
    "outputs": {
        "report": Key(_BOOL, True, doc="Write report.html."),
        "maps": Key(_BOOL, True, doc="Write NIfTI/GIfTI/TSV maps with sidecars."),
        "interactive": Key(_BOOL, False, doc="Add interactive surface views to the report."),
    },
    "compute": {
        "scheduler": Key(_STR, "serial", doc='"serial", "local" (a Dask LocalCluster) or '
                         'a scheduler address such as "tcp://host:8786".'),
        "n_workers": Key(_INT, 2, doc="Workers of the local Dask cluster."),
    },
}

#: Which tables each stage's output depends on (its own and everything upstream).
STAGE_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "record": ("model", "stories"),
    "timecourse": ("model", "stories", "timecourse"),
    # a simulation plants the time courses of the study's own neuron subgroups
    "fmri": ("model", "stories", "timecourse", "patterns", "fmri", "study"),
    "patterns": ("model", "stories", "timecourse", "patterns", "study"),
    "encoding": ("model", "stories", "timecourse", "patterns", "fmri", "encoding", "study"),
    "networks": ("model", "stories", "timecourse", "patterns", "fmri", "encoding", "networks",
                 "study"),
    "interventions": ("model", "stories", "interventions", "study"),
}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({str: "string", int: "integer", float: "number", bool: "boolean",
                        list: "list"}[t] for t in types)


def validate(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check a parsed configuration against :data:`SCHEMA` and fill in defaults.

    Raises
    ------
    ConfigError
        Naming the offending table or key, and the allowed tables, keys, types or values.
    """
    unknown_tables = sorted(set(raw) - set(SCHEMA))
    if unknown_tables:
        raise ConfigError(f"unknown table(s) {unknown_tables}; allowed tables: {sorted(SCHEMA)}")
    config: dict[str, dict[str, Any]] = {}
    for table, keys in SCHEMA.items():
        given = raw.get(table, {})
        if not isinstance(given, dict):
            raise ConfigError(f"[{table}] must be a table of keys, got {type(given).__name__}")
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise ConfigError(f"unknown key(s) {[f'{table}.{k}' for k in unknown]}; allowed keys "
                              f"in [{table}]: {sorted(keys)}")
        section = {}
        for name, key in keys.items():
            value = given.get(name, copy.deepcopy(key.default))
            ok = isinstance(value, key.types) and not (
                isinstance(value, bool) and bool not in key.types)
            if not ok:
                raise ConfigError(f"{table}.{name} must be of type {_type_name(key.types)}, got "
                                  f"{value!r} ({type(value).__name__})")
            if key.choices is not None and value not in key.choices:
                raise ConfigError(f"{table}.{name} = {value!r} is not allowed; allowed values: "
                                  f"{list(key.choices)}")
            section[name] = value
        config[table] = section
    _check_values(config)
    return config


def _check_values(config: dict[str, dict[str, Any]]) -> None:
    from brainalign.models.sites import SITE_NAMES

    bad_sites = [s for s in config["model"]["sites"] if s not in SITE_NAMES]
    if bad_sites:
        raise ConfigError(f"model.sites contains {bad_sites}; allowed values: {list(SITE_NAMES)}")
    layers = config["model"]["layers"]
    if isinstance(layers, str) and layers != "all":
        raise ConfigError(f'model.layers = {layers!r}; allowed: "all" or a list of integers')
    if isinstance(layers, list) and not all(isinstance(i, int) and i >= 0 for i in layers):
        raise ConfigError(f"model.layers = {layers!r}; allowed: a list of integers >= 0")
    if not config["model"]["names"]:
        raise ConfigError("model.names is empty; give at least one model (e.g. 'smollm2-135m')")
    allowed_spaces = ("fsaverage5", "MNI152_3mm", "MNI152_2mm", "roi")
    bad_spaces = [s for s in config["fmri"]["spaces"] if s not in allowed_spaces]
    if bad_spaces:
        raise ConfigError(f"fmri.spaces contains {bad_spaces}; allowed values: {list(allowed_spaces)}")
    for table, name, low in (("patterns", "n_atoms", 2), ("encoding", "n_permutations", 0),
                             ("networks", "n_null", 0), ("networks", "n_shifts", 0),
                             ("fmri", "n_subjects", 1),
                             ("study", "seed", 0), ("compute", "n_workers", 1)):
        if config[table][name] < low:
            raise ConfigError(f"{table}.{name} = {config[table][name]} must be >= {low}")
    if (config["fmri"]["source"] == "simulated"
            and config["fmri"]["n_planted"] > config["patterns"]["n_atoms"]):
        raise ConfigError(f"fmri.n_planted = {config['fmri']['n_planted']} exceeds "
                          f"patterns.n_atoms = {config['patterns']['n_atoms']}: the planted "
                          "patterns are the study's atoms")
    if not config["stories"]["bundled"] and not config["stories"]["paths"]:
        raise ConfigError("stories: set bundled = true or give stories.paths")
    if config["fmri"]["source"] != "simulated" and not config["fmri"]["paths"]:
        raise ConfigError(f"fmri.paths is empty but fmri.source = {config['fmri']['source']!r} "
                          "needs data files")
    delays = config["encoding"]["delays"]
    if not delays or not all(isinstance(d, int) and d >= 0 for d in delays):
        raise ConfigError(f"encoding.delays = {delays!r}; allowed: a non-empty list of integers >= 0")
    for table, name in (("encoding", "fdr_q"), ("networks", "alpha")):
        if not 0 < config[table][name] < 1:
            raise ConfigError(f"{table}.{name} = {config[table][name]} must lie in (0, 1)")


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and validate a study TOML file; ``study.out`` is resolved next to the file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    config = validate(raw)
    out = Path(config["study"]["out"])
    config["study"]["out"] = str(out if out.is_absolute() else (path.parent / out).resolve())
    return config


def stage_config(config: dict[str, dict[str, Any]], stage: str) -> dict[str, Any]:
    """The tables a stage depends on (what its cache key hashes); ``study.out`` excluded."""
    if stage not in STAGE_DEPENDENCIES:
        raise KeyError(f"unknown stage {stage!r}; stages: {sorted(STAGE_DEPENDENCIES)}")
    part = {table: dict(config[table]) for table in STAGE_DEPENDENCIES[stage]}
    if "study" in part:
        part["study"].pop("out", None)
        part["study"].pop("name", None)
    return part


def example_toml() -> str:
    """A complete study file with every key at its default, each documented."""
    lines = ["# brainalign study configuration: every key with its default."]
    for table, keys in SCHEMA.items():
        lines.append(f"\n[{table}]")
        for name, key in keys.items():
            allowed = f" Allowed: {', '.join(map(str, key.choices))}." if key.choices else ""
            lines.append(f"# {key.doc}{allowed}")
            lines.append(f"{name} = {_toml_value(key.default)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
