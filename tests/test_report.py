"""The HTML report: self-contained, renders in headless Chromium with no console output."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib.image
import numpy as np
import pytest

from brainalign.report import figures
from brainalign.report.html import Report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
                  "--v=0", "--window-size=1200,1600"]


def render_in_chromium(page, tmp_path):
    """Screenshot of ``page`` and the console lines Chromium logged while loading it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium)")
    shot = tmp_path / "shot.png"
    run = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert shot.exists(), f"chromium wrote no screenshot:\n{run.stderr[-2000:]}"
    return matplotlib.image.imread(shot), console


def small_report(tmp_path):
    rng = np.random.default_rng(0)
    report = Report("Test study")
    report.section("Stimulus and model").key_values({"model": "tiny", "words": 120, "tr_s": 2.0})
    report.section("Atoms").figure(figures.atom_timecourses(rng.normal(size=(50, 6)), 2.0),
                                   "atom time courses")
    matrix = rng.random((6, 7))
    report.section("Pattern x network").figure(
        figures.heatmap(matrix, [f"atom {i}" for i in range(6)], [f"net {j}" for j in range(7)],
                        "similarity", "r", marks=matrix > 0.8), "pattern x network"
    ).table(["atom", "network", "p"], [[0, "net 1", 0.001], [1, "none", 0.4]])
    report.section("Provenance").provenance({"config_hash": "abc", "seed": 0})
    return report.write(tmp_path / "report.html")


def test_report_is_self_contained(tmp_path):
    page = small_report(tmp_path)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2
    # No external resources: every src/href is a data URI or an in-page anchor.
    for ref in re.findall(r'(?:src|href)="([^"]+)"', text):
        assert ref.startswith(("data:", "#")), ref
    assert "<th>atom</th>" in text and "net 1" in text


def test_report_renders_in_browser_without_console_messages(tmp_path):
    page = small_report(tmp_path)
    pixels, console = render_in_chromium(page, tmp_path)
    assert console == []
    gray = pixels[..., :3].mean(axis=2)
    assert gray.std() > 0.05, "screenshot is blank"
    assert (gray < 0.5).mean() > 0.001, "no dark pixels: text and figures did not render"


def test_browser_check_catches_a_script_error(tmp_path):
    """The browser check itself must fail on a page that raises in JavaScript."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><h1>x</h1><script>notDefined();</script></body></html>")
    _, console = render_in_chromium(page, tmp_path)
    assert any("notDefined" in line for line in console)
