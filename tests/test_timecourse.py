"""Word -> TR resampling (Lanczos, HRF), per-run z-scoring/trimming, recording_to_tr."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from conftest import requires_cuda
from nilearn.glm.first_level import compute_regressor
from scipy.stats import zscore

from brainalign.record.neurons import NeuronTable
from brainalign.stimuli.story import Story, Word
from brainalign.timecourse.resample import lanczos_kernel
from brainalign.timecourse import (NeuronTimecourses, recording_to_tr,
                                   runs_from_lengths, tr_grid, trim_mask, trim_runs, words_to_tr,
                                   zscore_runs)


def make_story(onsets_per_run, tr_s=2.0, n_volumes=None, duration_s=0.2, first_volume_s=0.0,
               allow_words_outside_scan=False):
    words = [Word(f"w{r}_{i}", float(t), float(t) + duration_s, r)
             for r, onsets in enumerate(onsets_per_run) for i, t in enumerate(onsets)]
    story = Story("test", tuple(words))
    if n_volumes is None:
        return story
    return story.with_scan(tr_s, n_volumes, first_volume_s=first_volume_s,
                           allow_words_outside_scan=allow_words_outside_scan)


def lanczos_reference(word_times, tr_times, values, rate_hz, window=3):
    """Scalar float64 loop over the Lanczos formula (sinc rate ``rate_hz``)."""
    out = np.zeros((len(tr_times), values.shape[1]))
    for k, t_k in enumerate(tr_times):
        for w, t_w in enumerate(word_times):
            x = (t_k - t_w) * rate_hz
            if x == 0:
                weight = 1.0
            elif abs(x) > window:
                weight = 0.0
            else:
                weight = window * math.sin(math.pi * x) * math.sin(math.pi * x / window) / (math.pi * x) ** 2
            out[k] += weight * values[w]
    return out


def test_lanczos_kernel_values():
    x = np.array([0.0, 0.5, 1.0, 2.0, 3.0, 3.5, -0.5])
    got = lanczos_kernel(x, window=3)
    expected = [1.0, 3 * math.sin(math.pi / 6) / (math.pi * 0.5) ** 2, 0.0, 0.0, 0.0, 0.0,
                3 * math.sin(math.pi / 6) / (math.pi * 0.5) ** 2]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_words_to_tr_lanczos_matches_float64_reference_on_irregular_words():
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 60, 80))
    story = make_story([onsets], tr_s=2.0, n_volumes=[31], duration_s=0.3)
    values = rng.standard_normal((80, 3))
    got = words_to_tr(values, story, method="lanczos")
    expected = lanczos_reference(onsets + 0.15, 2.0 * np.arange(31), values, rate_hz=0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_lanczos_passes_up_to_the_nyquist_frequency_and_rejects_above():
    """The Huth-lab kernel (sinc rate 1 / tr_s) is a low-pass at 1 / (2 tr_s) = 0.25 Hz.
    Revision 1 (rate 1 / (2 tr_s)) kept only half that band: its gain at 0.15 Hz was 0.18."""
    dt, tr_s, n_tr = 0.1, 2.0, 200
    onsets = np.arange(0, tr_s * n_tr, dt)
    story = make_story([onsets], tr_s=tr_s, n_volumes=[n_tr], duration_s=0.0)
    t_tr = tr_s * np.arange(n_tr)
    interior = slice(10, n_tr - 10)
    dc = words_to_tr(np.ones_like(onsets), story)[interior].mean()
    np.testing.assert_allclose(dc, tr_s / dt, rtol=0.01)  # words per tr_s / cutoff_mult (doc)

    def gain(frequency_hz):
        got = words_to_tr(np.sin(2 * np.pi * frequency_hz * onsets), story)[interior] / dc
        reference = np.sin(2 * np.pi * frequency_hz * t_tr)[interior]
        return float(got @ reference / (reference @ reference))

    for frequency_hz in (0.02, 0.1, 0.15):
        assert abs(gain(frequency_hz) - 1) < 0.03, frequency_hz
    assert 0.7 < gain(0.2) < 0.95  # the Lanczos window's transition band below Nyquist
    for frequency_hz in (0.35, 0.6):  # above Nyquist (0.25 Hz) and beyond the transition
        fast = words_to_tr(np.sin(2 * np.pi * frequency_hz * onsets), story)[interior] / dc
        assert np.max(np.abs(fast)) < 0.05, frequency_hz



def test_half_cutoff_gives_the_revision_1_kernel():
    """cutoff_mult = 0.5 is the kernel before revision 2 (sinc rate 1 / (2 tr_s)), as the
    README says, so earlier results can be reproduced."""
    rng = np.random.default_rng(3)
    onsets = np.sort(rng.uniform(0, 60, 80))
    story = make_story([onsets], tr_s=2.0, n_volumes=[31], duration_s=0.3)
    values = rng.standard_normal((80, 2))
    got = words_to_tr(values, story, cutoff_mult=0.5)
    expected = lanczos_reference(onsets + 0.15, 2.0 * np.arange(31), values, rate_hz=0.25)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)

def test_lanczos_is_identity_on_the_grid_at_the_default_cutoff():
    """Words on the volume times come back unchanged: one sinc zero crossing per TR."""
    story = make_story([2.0 * np.arange(20)], tr_s=2.0, n_volumes=[20], duration_s=0.0)
    values = np.random.default_rng(1).standard_normal((20, 2))
    np.testing.assert_allclose(words_to_tr(values, story), values, atol=1e-12)


@pytest.mark.parametrize("hrf_model", ["spm", "glover"])
def test_hrf_matches_nilearn_compute_regressor(hrf_model):
    tr_s, n_tr, oversampling = 2.0, 60, 50
    dt = tr_s / oversampling
    rng = np.random.default_rng(2)
    # just below points of nilearn's fine grid (-24 s + j dt), which nilearn rounds up to
    on_grid = np.sort(rng.choice(np.arange(0, 100 / dt), 40, replace=False)) * dt - 1e-9
    amplitudes = rng.standard_normal(40)
    story = make_story([on_grid], tr_s=tr_s, n_volumes=[n_tr])
    got = words_to_tr(amplitudes, story, method="hrf", hrf_model=hrf_model, oversampling=oversampling)
    frame_times = tr_s * np.arange(n_tr)
    expected, _ = compute_regressor((on_grid, np.zeros(40), amplitudes), hrf_model, frame_times,
                                    oversampling=oversampling)
    peak = np.abs(expected).max()
    assert peak > 0.01
    np.testing.assert_allclose(got, expected[:, 0], atol=1e-4 * peak)
    # onsets off the fine grid: nilearn rounds them up to the grid, we interpolate
    off_grid = on_grid + dt * rng.uniform(0.1, 0.9, 40)
    story = make_story([off_grid], tr_s=tr_s, n_volumes=[n_tr])
    got = words_to_tr(amplitudes, story, method="hrf", hrf_model=hrf_model)
    expected, _ = compute_regressor((off_grid, np.zeros(40), amplitudes), hrf_model, frame_times)
    np.testing.assert_allclose(got, expected[:, 0], atol=0.03 * peak)


def test_a_coarse_hrf_grid_is_refused():
    """At 1-2 grid points per TR the sampled HRF peaks a second late (nilearn's too)."""
    story = make_story([2.0 * np.arange(10)], tr_s=2.0, n_volumes=[12])
    with pytest.raises(ValueError, match="oversampling must be >= 10, got 2"):
        words_to_tr(np.ones(10), story, method="hrf", oversampling=2)
    assert np.isfinite(words_to_tr(np.ones(10), story, method="hrf", oversampling=10)).all()


@pytest.mark.parametrize("method", ["lanczos", "hrf"])
def test_runs_do_not_leak_and_equal_separate_stories(method):
    rng = np.random.default_rng(3)
    run0, run1 = np.sort(rng.uniform(0, 40, 50)), np.sort(rng.uniform(0, 30, 40))
    story = make_story([run0, run1], tr_s=1.5, n_volumes=[30, 25])
    values = rng.standard_normal((90, 2))
    only_run0 = values.copy()
    only_run0[50:] = 0
    got = words_to_tr(only_run0, story, method=method)
    assert got.shape == (55, 2)
    assert np.all(got[30:] == 0)
    assert np.count_nonzero(got[:30]) > 40
    both = words_to_tr(values, story, method=method)
    first = words_to_tr(values[:50], make_story([run0], tr_s=1.5, n_volumes=[30]), method=method)
    second = words_to_tr(values[50:], make_story([run1], tr_s=1.5, n_volumes=[25]), method=method)
    np.testing.assert_allclose(both, np.vstack([first, second]), atol=1e-12)


def test_first_volume_time_of_the_scan_shifts_the_tr_grid():
    rng = np.random.default_rng(4)
    onsets = np.sort(rng.uniform(20, 79.5, 120))
    values = rng.standard_normal(120)
    shifted = words_to_tr(values, make_story([onsets], n_volumes=[30], first_volume_s=20.0))
    expected = words_to_tr(values, make_story([onsets - 20.0], n_volumes=[30]))
    np.testing.assert_allclose(shifted, expected, atol=1e-10)
    times, runs = tr_grid(make_story([onsets, onsets - 20.0], n_volumes=[30, 30],
                                     first_volume_s=[20.0, 0.0]))
    np.testing.assert_allclose(times, np.concatenate([20.0 + 2.0 * np.arange(30),
                                                      2.0 * np.arange(30)]))
    np.testing.assert_array_equal(runs, np.repeat([0, 1], 30))


def test_a_word_lands_on_the_volume_acquired_at_its_time():
    # first kept volume at 20 s: the word at 32 s is volume 6 (20 + 6 x 2 s), not 16
    story = make_story([[21.0, 32.0, 45.0]], n_volumes=[20], duration_s=0.0, first_volume_s=20.0)
    got = words_to_tr(np.array([0.0, 1.0, 0.0]), story)
    assert int(np.argmax(got)) == 6 and got[6] == pytest.approx(1.0)


def test_alice_like_timing_without_the_discarded_volumes_is_an_error_or_a_10_tr_shift():
    onsets = 20.06 + 0.34 * np.arange(2127)  # the Alice TextGrid runs 20.06 .. 743.3 s
    words = make_story([onsets], duration_s=0.3)
    rate = np.ones(len(onsets))
    right = words_to_tr(rate, words.with_scan(2.0, [362], first_volume_s=20.0), method="hrf")
    with pytest.raises(ValueError, match=r"run 0: 57 of 2127 word\(s\) outside the scan: "
                       r"words 20.060 .. 743.200 s, scan 0.000 .. 724.000 s"):
        words.with_scan(2.0, [362], first_volume_s=0.0)
    stamped_from_zero = words.with_scan(2.0, [362], first_volume_s=0.0,
                                        allow_words_outside_scan=True)
    with pytest.raises(ValueError, match="outside the scan"):
        words_to_tr(rate, stamped_from_zero, method="hrf")
    wrong = words_to_tr(rate, stamped_from_zero, method="hrf", allow_words_outside_scan=True)
    # every feature lands 10 TRs (20 s) late on the data's rows
    np.testing.assert_allclose(wrong[10:], right[:-10], atol=1e-12)
    assert np.corrcoef(wrong, right)[0, 1] < 0.9


def test_words_to_tr_errors_are_clear():
    story = make_story([np.arange(10.0)])
    with pytest.raises(ValueError, match=r"no complete scan timing \(missing tr_s, n_volumes, "
                       r"first_volume_s\).*with_scan"):
        words_to_tr(np.ones(10), story)
    with pytest.raises(ValueError, match="no complete scan timing"):
        tr_grid(story)
    story = story.with_scan(2.0, [8], first_volume_s=0.0)
    with pytest.raises(ValueError, match=r"shape \(10, n_features\)"):
        words_to_tr(np.ones((9, 2)), story)
    bad = np.ones(10)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        words_to_tr(bad, story)
    with pytest.raises(ValueError, match="method"):
        words_to_tr(np.ones(10), story, method="cubic")


def test_zscore_runs_matches_scipy_per_run():
    rng = np.random.default_rng(5)
    data = rng.standard_normal((50, 4)) * 3 + 7
    data[:20, 2] = 4.0  # constant in run 0 only
    runs = runs_from_lengths([20, 30])
    got = zscore_runs(data, runs)
    np.testing.assert_allclose(got[20:], zscore(data[20:], axis=0), atol=1e-12)
    np.testing.assert_allclose(got[:20, [0, 1, 3]], zscore(data[:20, [0, 1, 3]], axis=0), atol=1e-12)
    assert np.all(got[:20, 2] == 0)



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zscore_runs_turns_large_constants_into_zero(dtype):
    """The mean of a constant column is not exactly the constant in floating point; the
    column must still become 0, not the +-1 that dividing the rounding residue gives."""
    runs = runs_from_lengths([100, 300])
    noise = np.random.default_rng(0).standard_normal(400)
    data = np.column_stack([np.full(400, 0.1), np.full(400, 1000.1), np.full(400, 12345.678),
                            noise]).astype(dtype)
    got = zscore_runs(data, runs)
    assert np.all(got[:, :3] == 0)
    np.testing.assert_allclose(got[100:, 3], zscore(data[100:, 3].astype(np.float64)), atol=1e-5)

def test_trim_runs_drops_edges_of_every_run():
    runs = runs_from_lengths([5, 6])
    data = np.arange(11)[:, None]
    trimmed, trimmed_runs = trim_runs(data, runs, (1, 2))
    assert trimmed[:, 0].tolist() == [1, 2, 6, 7, 8]
    assert trimmed_runs.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="removes every TR"):
        trim_mask(runs, (3, 2))
    with pytest.raises(ValueError, match="contiguous"):
        trim_mask(np.array([0, 0, 1, 0]), (0, 0))


@dataclass
class FakeRecording:
    """The shape of brainalign.record.Recording that recording_to_tr relies on."""

    story: Story
    neurons: NeuronTable
    path: object
    shape: tuple
    provenance: dict = field(default_factory=lambda: {"model": "fake"})
    calls: list = field(default_factory=list)

    def matrix(self, sites=None, layers=None):
        self.calls.append((sites, layers))
        full = np.load(self.path, mmap_mode="r")
        keep = self.neurons.mask(sites, layers)
        return full if keep.all() else full[:, keep]


def fake_recording(tmp_path, n_neurons=10):
    rng = np.random.default_rng(6)
    story = make_story([np.sort(rng.uniform(0, 50, 60)), np.sort(rng.uniform(0, 40, 45))],
                       tr_s=2.0, n_volumes=[27, 22])
    matrix = rng.standard_normal((105, n_neurons)).astype(np.float32)
    np.save(tmp_path / "matrix.npy", matrix)
    half = n_neurons // 2
    neurons = NeuronTable.from_sites([(0, "mlp.out", half), (1, "mlp.out", n_neurons - half)])
    return FakeRecording(story, neurons, tmp_path / "matrix.npy", matrix.shape), matrix


@pytest.mark.parametrize("method", ["lanczos", "hrf"])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_recording_to_tr_matches_float64_reference(tmp_path, method, device):
    recording, matrix = fake_recording(tmp_path)
    trim = (2, 1)
    result = recording_to_tr(recording, method=method, trim=trim, device=device, chunk_neurons=3)
    reference = words_to_tr(matrix.astype(np.float64), recording.story, method=method)
    times, runs = tr_grid(recording.story)
    reference, kept_runs = trim_runs(reference, runs, trim)
    reference = zscore_runs(reference, kept_runs)
    assert result.data.dtype == np.float32 and result.data.shape == (49 - 6, 10)
    np.testing.assert_allclose(result.data, reference, atol=2e-5)
    np.testing.assert_array_equal(result.runs, kept_runs)
    np.testing.assert_allclose(result.times_s, times[trim_mask(runs, trim)])
    assert result.provenance["recording"] == {"model": "fake"}
    assert result.provenance["trim"] == [2, 1] and result.provenance["method"] == method
    # streamed one (site, layer) block at a time, never the whole matrix
    assert recording.calls == [(["mlp.out"], [0]), (["mlp.out"], [1])]


def test_recording_to_tr_selects_layers_and_skips_zscore(tmp_path):
    recording, matrix = fake_recording(tmp_path)
    result = recording_to_tr(recording, layers=[1], zscore=False, device=None)
    assert result.neurons.layer.tolist() == [1] * 5
    reference = words_to_tr(matrix[:, 5:].astype(np.float64), recording.story)
    np.testing.assert_allclose(result.data, reference, atol=1e-4)


def test_recording_to_tr_takes_a_later_scan_and_records_its_first_volume_times(tmp_path):
    recording, matrix = fake_recording(tmp_path)
    assert recording_to_tr(recording, device=None).provenance["first_volume_s"] == [0.0, 0.0]
    later = Story(recording.story.name, recording.story.words).with_scan(
        2.0, [25, 20], first_volume_s=[0.0, 1.5])
    result = recording_to_tr(recording, story=later, zscore=False, device=None)
    assert result.provenance["first_volume_s"] == [0.0, 1.5]
    assert result.provenance["n_volumes"] == [25, 20]
    np.testing.assert_allclose(result.times_s[25:], 1.5 + 2.0 * np.arange(20))
    np.testing.assert_allclose(result.data, words_to_tr(matrix.astype(np.float64), later),
                               atol=1e-4)
    other = Story("other", later.words[:-1]).with_scan(2.0, [25, 20], first_volume_s=0.0)
    with pytest.raises(ValueError, match=r"story 'other' \(104 words\) does not have the words "
                       r"of the recording of 'test' \(105 words\)"):
        recording_to_tr(recording, story=other)


def test_neuron_timecourses_save_load_round_trip(tmp_path):
    recording, _ = fake_recording(tmp_path)
    result = recording_to_tr(recording, device=None)
    loaded = NeuronTimecourses.load(result.save(tmp_path / "tc"))
    np.testing.assert_array_equal(loaded.data, result.data)
    np.testing.assert_array_equal(loaded.runs, result.runs)
    np.testing.assert_array_equal(loaded.neurons.site, result.neurons.site)
    assert loaded.provenance["method"] == "lanczos"
    sub = loaded.select([0, 7])
    np.testing.assert_array_equal(sub.data, result.data[:, [0, 7]])
    assert sub.neurons.unit.tolist() == [0, 2]


@requires_cuda
def test_recording_to_tr_on_cuda_matches_numpy(tmp_path):
    recording, _ = fake_recording(tmp_path)
    on_gpu = recording_to_tr(recording, device="cuda", chunk_neurons=4)
    on_cpu = recording_to_tr(recording, device=None)
    np.testing.assert_allclose(on_gpu.data, on_cpu.data, atol=1e-4)
