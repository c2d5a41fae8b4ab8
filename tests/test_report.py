"""The HTML report: self-contained, renders in headless Chromium with no console output."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from brainalign.report import figures
from brainalign.report.browser import find_chromium, page_layout, screenshot
from brainalign.report.html import Report


def _need_chromium():
    if find_chromium() is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium)")


def render_in_chromium(page, tmp_path):
    """Screenshot of ``page`` and the console lines Chromium logged while loading it."""
    _need_chromium()
    shot = tmp_path / "shot.png"
    console = screenshot(page, shot, tmp_path / "profile")
    return matplotlib.image.imread(shot), console


def figures_in_chromium(page, tmp_path) -> list[dict]:
    """Every <img> of ``page`` as Chromium laid it out: alt text, decoded (natural) and
    rendered sizes in pixels, and whether it finished loading."""
    _need_chromium()
    return page_layout(page, tmp_path / "probe")["images"]


def assert_figures_render(page, tmp_path, min_px: int = 200) -> list[dict]:
    """Every figure of ``page`` decoded, shown at least ``min_px`` wide and 50 px tall, with
    alt text; returns Chromium's rows."""
    rows = figures_in_chromium(page, tmp_path)
    assert len(rows) == page.read_text().count("<img "), "an image is missing from the DOM"
    for row in rows:
        assert row["complete"] and row["naturalWidth"] >= min_px and row["naturalHeight"] >= 50, row
        assert row["width"] >= min_px and row["height"] >= 50, row
        assert len(row["alt"]) >= 10, row
    return rows


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


def test_figure_probe_reports_every_image_with_its_size_and_alt_text(tmp_path):
    page = small_report(tmp_path)
    rows = assert_figures_render(page, tmp_path)
    assert [row["alt"] for row in rows] == ["atom time courses", "pattern x network"]
    # the probe must catch a broken image: a data URI that does not decode
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img alt="a broken figure" src="data:image/png;base64,AAAA">'
                      "</body></html>")
    (row,) = figures_in_chromium(broken, tmp_path)
    assert row["naturalWidth"] == 0
    with pytest.raises(AssertionError):
        assert_figures_render(broken, tmp_path)


def test_atom_timecourses_shows_every_atom_and_the_run_boundaries():
    atoms = np.random.default_rng(0).normal(size=(90, 20)) * np.arange(1, 21)
    fig = figures.atom_timecourses(atoms, 2.0, run_lengths=[40, 30, 20], units="a.u.")
    ax = fig.axes[0]
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert labels == [f"atom{k:02d} (peak {np.abs(atoms[:, k]).max():.2g})" for k in range(20)]
    boundaries = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--")
    np.testing.assert_allclose(boundaries, [39 * 2.0 + 1.0, 69 * 2.0 + 1.0])
    assert "a.u." in ax.get_ylabel() and ax.get_xlabel() == "time from the first TR (s)"
    with pytest.raises(ValueError, match="run_lengths sum to 80 TRs but the atoms have 90"):
        figures.atom_timecourses(atoms, 2.0, run_lengths=[40, 40])


def test_surface_map_has_four_views_and_a_labelled_colour_bar():
    values = np.random.default_rng(0).normal(size=20484)
    fig = figures.surface_map(values, "r", units="held-out Pearson r")
    views = [ax.get_title() for ax in fig.axes if ax.name == "3d"]
    assert views == ["left lateral", "left medial", "right medial", "right lateral"]
    (colour_bar,) = [ax for ax in fig.axes if ax.name != "3d"]
    assert colour_bar.get_ylabel() == "held-out Pearson r"
    assert colour_bar.get_ylim() == pytest.approx((-np.abs(values).max(), np.abs(values).max()))
    with pytest.raises(ValueError, match="expects 20484 fsaverage5 values"):
        figures.surface_map(values[:100], "r")


def test_volume_map_draws_the_template_beneath_a_thresholded_map():
    """Zeros outside the mask are transparent, so the template shows through; the colour
    bar carries the units."""
    import nibabel as nib

    template = figures.mni_template()
    grid = np.zeros((20, 24, 20), dtype=np.float32)
    grid[8:12, 10:14, 8:12] = 0.5
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = [-60, -80, -50]
    fig = figures.volume_map(nib.Nifti1Image(grid, affine), "r", units="held-out Pearson r")
    images = [image for ax in fig.axes for image in ax.get_images()]
    assert len(images) >= 6  # three cuts, each with the template and the map
    shapes = {image.get_array().shape for image in images}
    assert any(max(shape[:2]) > 100 for shape in shapes), "no 1 mm template underlay"
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "held-out Pearson r" in labels
    assert template.shape[0] > 150


def test_assignment_map_labels_the_targets_of_each_assigned_network():
    from types import SimpleNamespace

    from brainalign.networks.atlases import Atlas
    from brainalign.pipeline.study_report import _assigned_network_labels

    mapping = SimpleNamespace(networks=["Vis", "SomMot", "Default"],
                              assigned_index=np.array([2, -1, 0, 2, 0, 0]))
    hard = Atlas("toy", "roi", ["Vis", "SomMot", "Default"], np.array([0, 1, 2, 3, 3, 1]))
    labels, names = _assigned_network_labels(hard, mapping)
    np.testing.assert_array_equal(labels, [0, 1, 0, 2, 2, 1])
    assert names == ["Vis (3 atoms)", "Default (2 atoms)"]
    weights = np.array([[0.9, 0.0, 0.1], [0.1, 0.0, 0.2], [0.0, 0.0, 0.7]])
    soft = Atlas("toy", "roi", ["Vis", "SomMot", "Default"], weights)
    np.testing.assert_array_equal(_assigned_network_labels(soft, mapping)[0], [1, 0, 2])
    other = Atlas("other", "roi", ["A", "B", "C"], np.array([1, 2, 3]))
    assert _assigned_network_labels(other, mapping)[1] == []


def test_label_maps_colour_each_network_and_name_it_on_the_colour_bar():
    labels = np.zeros(20484, dtype=int)
    labels[:3000], labels[12000:15000] = 1, 2
    names = ["Somatomotor (2 atoms)", "Default (1 atom)"]
    fig = figures.surface_labels(labels, names, "networks with an atom")
    (colour_bar,) = [ax for ax in fig.axes if ax.name != "3d"]
    assert [tick.get_text() for tick in colour_bar.get_yticklabels()] == names
    with pytest.raises(ValueError, match=r"labels in 0..2"):
        figures.surface_labels(labels + 1, names, "x")
    import nibabel as nib

    grid = np.zeros((20, 24, 20), dtype=np.int16)
    grid[8:12, 10:14, 8:12], grid[4:8, 4:8, 4:8] = 1, 2
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = [-60, -80, -50]
    fig = figures.volume_labels(nib.Nifti1Image(grid, affine), names, "networks")
    ticks = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    assert names in ticks


def test_maps_of_shares_use_a_sequential_scale_from_zero():
    values = np.abs(np.random.default_rng(0).normal(size=20484)) / 5
    fig = figures.surface_map(values, "share", threshold=1e-6, units="share of subjects",
                              positive=True)
    (colour_bar,) = [ax for ax in fig.axes if ax.name != "3d"]
    assert colour_bar.get_ylim() == pytest.approx((0.0, values.max()))


def test_heatmap_stays_legible_with_many_columns():
    """160 ROIs: the figure is capped at 16 inches and labels every 4th column."""
    matrix = np.random.default_rng(0).normal(size=(6, 160))
    fig = figures.heatmap(matrix, [f"atom{k}" for k in range(6)], [f"roi{j}" for j in range(160)],
                          "atom maps", "coef")
    assert fig.get_size_inches()[0] == 16
    labels = [tick.get_text() for tick in fig.axes[0].get_xticklabels()]
    assert labels == [f"roi{j}" for j in range(0, 160, 4)]


def test_signed_scales_put_white_at_zero_whatever_the_data_range():
    """An all-positive signed matrix or map is drawn red, never blue: the heat map and the
    volume map centre RdBu_r on 0 (the data's own range put white at its midpoint, and
    nilearn's automatic scale put a t of 3 in blue on a one-sided group map)."""
    import nibabel as nib
    from matplotlib.colors import to_rgba

    matrix = np.array([[0.05, 0.30], [0.10, 0.50]])
    fig = figures.heatmap(matrix, ["a", "b"], ["x", "y"], "r", "r", cmap=figures.SIGNED_CMAP)
    (image,) = fig.axes[0].get_images()
    assert image.get_clim() == (-0.5, 0.5)
    red, green, blue, _ = image.to_rgba(np.array([[0.05]]))[0, 0]
    assert red > blue  # a positive value is on the red side of white
    # sequential maps keep the data's own range
    fig = figures.heatmap(matrix, ["a", "b"], ["x", "y"], "share", "share")
    assert fig.axes[0].get_images()[0].get_clim() == (0.05, 0.5)

    grid = np.zeros((20, 24, 20), dtype=np.float32)
    grid[8:12, 10:14, 8:12], grid[3:6, 3:6, 3:6] = 3.0, 8.0
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = [-60, -80, -50]
    fig = figures.volume_map(nib.Nifti1Image(grid, affine), "t", units="t")
    (bar,) = [ax for ax in fig.axes if ax.get_ylabel() == "t"]
    assert bar.get_ylim() == pytest.approx((-8.0, 8.0))
    overlays = [im for ax in fig.axes for im in ax.get_images() if im.get_clim()[0] < 0]
    assert overlays and all(im.get_clim() == pytest.approx((-8.0, 8.0)) for im in overlays)
    colour = overlays[0].to_rgba(np.array([[3.0]]))[0, 0]
    assert colour[0] > colour[2] and colour != pytest.approx(to_rgba("white"))


@pytest.mark.parametrize("n_labels", [7, 20, 21, 45, 64])
def test_every_network_label_has_its_own_colour(n_labels):
    cmap, norm = figures._label_colours(n_labels)
    colours = {tuple(np.round(cmap(norm(k)), 6)) for k in range(1, n_labels + 1)}
    assert len(colours) == n_labels


def test_encoding_section_states_r_over_scored_targets_only():
    """A target no subject could score (NaN r) is left out of the max, the 99th percentile
    and the best-predicted table; it was counted as r = 0, above every negative r."""
    from types import SimpleNamespace

    from brainalign.pipeline.study_report import _encoding_section

    subjects = [SimpleNamespace(r=np.array([np.nan, -0.1, -0.2, -0.3]),
                                valid_targets=np.array([False, True, True, True]))] * 2
    masker = SimpleNamespace(target_names_=["lost", "a", "b", "c"])
    study = SimpleNamespace(config={"encoding": {"bands": ["llm"], "n_permutations": 0}},
                            spaces=["roi"], encodings=lambda slug, space: subjects,
                            brain=lambda slug, space: SimpleNamespace(masker=masker))
    report = Report("t")
    _encoding_section(report, study, "model", interactive=False)
    page = report.write(Path(tempfile.mkdtemp()) / "r.html").read_text()
    cells = re.findall(r"<tr><th>(roi: [^<]+)</th><td[^>]*>([^<]+)</td>", page)
    assert dict(cells) == {"roi: max r": "-0.1", "roi: 99th percentile r": "-0.102",
                           "roi: targets with an r": "3 of 4"}
    best = re.findall(r"<tr><td[^>]*>(\w+)</td><td[^>]*>(-?[\d.]+)</td></tr>", page)
    assert best == [("a", "-0.1"), ("b", "-0.2"), ("c", "-0.3")]


def test_stability_curve_draws_every_series():
    """Series beyond the eighth were dropped (zipped with eight markers)."""
    series = {f"measure {i}": [0.1 * i, 0.05 * i] for i in range(10)}
    fig = figures.stability_vs_k([4, 8], series)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert [label for label in labels if label.startswith("measure")] == list(series)
