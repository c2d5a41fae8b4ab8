"""A study's feature bands: the word-rate control, extra bands from files, cleaned atoms."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.encoding.bands import resolve_bands
from brainalign.pipeline.bands import atom_band, atom_delays, extra_band, word_rate
from brainalign.pipeline.config import ConfigError, validate
from brainalign.stimuli import bundled_story
from brainalign.timecourse import words_to_tr


def test_word_rate_is_the_hrf_of_the_word_onsets_trimmed_like_the_time_courses():
    story = bundled_story()
    full = words_to_tr(np.ones(len(story.words)), story, method="hrf")
    rate = word_rate([story], trim=[2, 1])
    n_first, n_second = story.n_volumes
    expected = np.concatenate([full[2:n_first - 1], full[n_first + 2:-1]])
    np.testing.assert_allclose(rate[:, 0], expected)
    assert rate.shape == (sum(story.n_volumes) - 6, 1) and rate.min() >= 0


def test_extra_band_reads_one_row_per_volume_and_checks_the_count(tmp_path):
    story = bundled_story()
    n_volumes = sum(story.n_volumes)
    values = np.arange(n_volumes * 2, dtype=float).reshape(n_volumes, 2)
    path = tmp_path / "published.tsv"
    np.savetxt(path, values, delimiter="\t", header="a\tb", comments="")
    band = extra_band({"name": "published", "path": str(path), "hrf_convolved": True},
                      [story], trim=[1, 0])
    np.testing.assert_array_equal(band.values, np.delete(values, [0, story.n_volumes[0]], axis=0))
    assert band.hrf_convolved and band.delays == "inherit"
    np.savetxt(path, values[:-3], delimiter="\t")
    with pytest.raises(ConfigError, match=f"has {n_volumes - 3} rows but the stories' runs have "
                                          f"{n_volumes} volumes"):
        extra_band({"name": "published", "path": str(path)}, [story], trim=[0, 0])


@pytest.mark.parametrize("method, delays", [("hrf", []), ("lanczos", [1, 2, 3, 4])])
def test_atoms_resampled_with_the_hrf_get_no_fir_delays_on_top(method, delays):
    """HRF-resampled neuron time courses give HRF-convolved atoms: delaying them again by
    1-4 TRs would move their peak from 6 s to 8-14 s after the word."""
    config = validate({"timecourse": {"method": method}, "encoding": {"delays": [1, 2, 3, 4]}})
    atoms = np.random.default_rng(0).standard_normal((50, 3))
    (band,) = resolve_bands({"atoms": atom_band(atoms, config)}, 50,
                            delays=config["encoding"]["delays"])
    assert band.delays == delays and band.hrf_convolved == (method == "hrf")


@pytest.mark.parametrize("method, delays", [("hrf", [0]), ("lanczos", [1, 2, 3, 4])])
def test_network_tests_delay_the_atoms_as_the_encoding_model_did(method, delays):
    """The temporal and spatial network tests take the atoms band's delays from the fitted
    model: HRF-convolved atoms undelayed (0), not encoding.delays on top of the HRF."""
    from brainalign.encoding import fit_encoding

    config = validate({"timecourse": {"method": method}, "encoding": {"delays": [1, 2, 3, 4]}})
    rng = np.random.default_rng(1)
    atoms = rng.standard_normal((60, 2))
    result = fit_encoding({"atoms": atom_band(atoms, config), "word_rate": rng.standard_normal((60, 1))},
                          rng.standard_normal((60, 3)), np.repeat([0, 1], 30),
                          delays=config["encoding"]["delays"], n_perm=0, partition=False)
    assert atom_delays(result) == delays


def test_word_rate_accepts_words_outside_the_scan_only_when_allowed():
    """As the time courses do (fmri.allow_words_outside_scan): the study would otherwise stop
    at the encoding stage after accepting the story."""
    from dataclasses import replace

    from brainalign.stimuli import Word

    story = bundled_story()
    late = Word("late", story.words[-1].onset_s + 60.0, story.words[-1].onset_s + 60.5,
                story.words[-1].run)
    outside = replace(story, words=tuple(story.words) + (late,))
    with pytest.raises(ValueError, match="outside the scan"):
        word_rate([outside], trim=[0, 0])
    rate = word_rate([outside], trim=[0, 0], allow_words_outside_scan=True)
    np.testing.assert_allclose(rate, word_rate([story], trim=[0, 0]), atol=1e-9)
