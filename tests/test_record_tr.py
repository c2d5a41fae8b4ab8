"""Recording straight to the TR grid, and storage dtypes.

The reference for a TR-grid recording is the two-step route users already trust: a
word-level float32 recording resampled by :func:`recording_to_tr` (whose kernels are tested
against nilearn and by hand in test_timecourse.py). Stored float16 / bfloat16 values are
compared with the float32 recording of the same model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_record import make_story, one_thread, tiny_loaded  # noqa: F401 (fixture)

from brainalign.record import Recording, record_story, record_timecourses
from brainalign.record.recorder import storage_dtype
from brainalign.record.store import IncompleteRecordingError
from brainalign.timecourse import NeuronTimecourses, recording_to_tr
from brainalign.timecourse.timecourses import TrResampling

SMALL_WINDOWS = dict(context_tokens=32, stride_tokens=64, batch_size=2, progress=False)
SITES = ["mlp.inner", "resid"]


def scanned_story(n_words: int = 400, **scan):
    """Two runs of 0.3 s words; a 2 s scan that starts before the first word of run 0."""
    story = make_story(n_words)
    scan = {"tr_s": 2.0, "n_volumes": [32, 31], "first_volume_s": [-2.0, 0.0], **scan}
    return story.with_scan(scan.pop("tr_s"), scan.pop("n_volumes"), **scan)


@pytest.fixture(scope="module")
def causal():
    return tiny_loaded("llama")


@pytest.fixture(scope="module")
def word_recording(causal, tmp_path_factory):
    path = record_story(causal, scanned_story(), SITES, tmp_path_factory.mktemp("word"),
                        **SMALL_WINDOWS)
    return Recording.open(path)


@pytest.mark.parametrize("resampling", [
    TrResampling(),
    TrResampling(method="hrf", trim=(2, 1)),
    TrResampling(zscore=False, window=2, cutoff_mult=0.8),
    TrResampling(method="hrf", word_time="middle", hrf_model="glover", zscore=False),
], ids=["lanczos", "hrf-trim", "lanczos-raw", "glover-raw"])
def test_tr_recording_equals_word_recording_resampled(causal, word_recording, tmp_path,
                                                      resampling):
    reference = recording_to_tr(word_recording, resampling.method, trim=resampling.trim,
                                zscore=resampling.zscore, word_time=resampling.word_time,
                                window=resampling.window, cutoff_mult=resampling.cutoff_mult,
                                hrf_model=resampling.hrf_model, device="cpu")
    path = record_story(causal, word_recording.story, SITES, tmp_path, to_tr=resampling,
                        **SMALL_WINDOWS)
    recorded = NeuronTimecourses.load(path)
    assert recorded.data.dtype == np.float32
    assert recorded.data.shape == reference.data.shape
    scale = np.abs(reference.data).max()
    np.testing.assert_allclose(recorded.data, reference.data, rtol=0, atol=1e-5 * scale)
    np.testing.assert_array_equal(recorded.times_s, reference.times_s)
    np.testing.assert_array_equal(recorded.runs, reference.runs)
    for column in ("layer", "site", "unit"):
        np.testing.assert_array_equal(getattr(recorded.neurons, column),
                                      getattr(reference.neurons, column))
    for key in ("method", "word_time", "trim", "zscore", "first_volume_s", "lanczos", "hrf"):
        assert recorded.provenance[key] == reference.provenance[key], key
    assert recorded.provenance["recording"]["grid"] == "tr"
    if resampling.zscore:
        for run in (0, 1):
            rows = recorded.data[recorded.runs == run].astype(np.float64)
            np.testing.assert_allclose(rows.mean(0), 0, atol=1e-5)


def test_tr_recording_of_an_encoder_with_words_outside_the_scan(tmp_path):
    loaded = tiny_loaded("bert")
    # volumes start 10 s after run 0's first word: its first words reach no volume
    story = make_story(300).with_scan(2.0, [20, 22], first_volume_s=[10.0, 0.0],
                                      allow_words_outside_scan=True)
    resampling = TrResampling(allow_words_outside_scan=True)
    word = Recording.open(record_story(loaded, story, ["mlp.out"], tmp_path / "w",
                                       **SMALL_WINDOWS))
    reference = recording_to_tr(word, allow_words_outside_scan=True, device="cpu")
    recorded = NeuronTimecourses.load(record_story(loaded, story, ["mlp.out"], tmp_path / "t",
                                                   to_tr=resampling, **SMALL_WINDOWS))
    np.testing.assert_allclose(recorded.data, reference.data, rtol=0,
                               atol=1e-5 * np.abs(reference.data).max())
    with pytest.raises(ValueError, match="outside"):
        record_story(loaded, story, ["mlp.out"], tmp_path / "refused", to_tr=True,
                     **SMALL_WINDOWS)


def test_float16_tr_recording_is_within_float16_rounding(causal, word_recording, tmp_path):
    reference = recording_to_tr(word_recording, device="cpu")
    path = record_story(causal, word_recording.story, SITES, tmp_path, to_tr=True,
                        dtype="float16", **SMALL_WINDOWS)
    recorded = NeuronTimecourses.load(path)
    assert recorded.data.dtype == np.float16
    error = np.abs(recorded.data.astype(np.float64) - reference.data)
    # float16 keeps 11 significant bits: half a spacing is 2**-11 of the value
    assert np.all(error <= np.abs(reference.data) * 2.0 ** -11 + 1e-6)
    assert error.max() > 0  # really stored in float16
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["grid"] == "tr" and manifest["dtype"] == "float16"
    assert manifest["n_tr"] == recorded.n_tr == 63
    assert manifest["provenance"]["stored_dtype"] == "float16"


@pytest.mark.parametrize("dtype, bits", [("float16", 11), ("bfloat16", 8)])
def test_word_rows_in_16_bit_storage(causal, word_recording, tmp_path, dtype, bits):
    path = record_story(causal, word_recording.story, SITES, tmp_path, dtype=dtype,
                        **SMALL_WINDOWS)
    recording = Recording.open(path, verify=True)
    assert recording.dtype == dtype
    assert recording.provenance["stored_dtype"] == dtype
    for site in SITES:
        reference = np.asarray(word_recording.block(site, 1), dtype=np.float64)
        stored = recording.block(site, 1)
        assert stored.shape == reference.shape
        values = np.asarray(stored[:, :], dtype=np.float64)
        error = np.abs(values - reference)
        # half a spacing: 2**-bits of the value (2**-25 absolute among float16 subnormals)
        assert np.all(error <= np.abs(reference) * 2.0 ** -bits + 2.0 ** -25)
        assert error.max() > 0
    on_disk = np.load(path / "mlp.inner" / "L01.npy", mmap_mode="r")
    assert on_disk.dtype == (np.float16 if dtype == "float16" else np.uint16)
    assert on_disk.nbytes * 2 == np.load(word_recording.path / "mlp.inner" / "L01.npy",
                                         mmap_mode="r").nbytes
    # the TR route reads 16-bit recordings too
    timecourses = recording_to_tr(recording, device="cpu")
    assert timecourses.data.dtype == np.float32 and np.isfinite(timecourses.data).all()


def test_tr_recording_reruns_and_refusals(causal, word_recording, tmp_path):
    story = word_recording.story
    path = record_story(causal, story, ["resid"], tmp_path, to_tr=True, **SMALL_WINDOWS)
    stamp = (path / "manifest.json").stat().st_mtime_ns
    assert record_story(causal, story, ["resid"], tmp_path, to_tr=True, **SMALL_WINDOWS) == path
    assert (path / "manifest.json").stat().st_mtime_ns == stamp  # complete: skipped
    # another scan is another recording
    moved = story.with_scan(2.0, [32, 31], first_volume_s=[-4.0, 0.0])
    with pytest.raises(FileExistsError, match="other settings"):
        record_story(causal, moved, ["resid"], tmp_path, to_tr=True, **SMALL_WINDOWS)
    with pytest.raises(IncompleteRecordingError, match="NeuronTimecourses.load"):
        Recording.open(path)
    unscanned = make_story(50, name="no-scan")
    with pytest.raises(ValueError, match="scan"):
        record_story(causal, unscanned, ["resid"], tmp_path, to_tr=True, **SMALL_WINDOWS)
    assert not (tmp_path / "no-scan").exists()
    with pytest.raises(ValueError, match="float16 or float32"):
        record_story(causal, story, ["resid"], tmp_path / "b", to_tr=True, dtype="bfloat16",
                     **SMALL_WINDOWS)
    with pytest.raises(ValueError, match="dtype must be one of"):
        record_story(causal, story, ["resid"], tmp_path / "c", dtype="int8", **SMALL_WINDOWS)


def test_values_beyond_float16_are_refused(tmp_path):
    loaded = tiny_loaded("llama", seed=3)
    with torch.no_grad():
        loaded.model.model.embed_tokens.weight.mul_(1e8)  # residual stream ~2e6 > 65504
    story = scanned_story(120, n_volumes=[10, 10])
    with pytest.raises(ValueError, match="float32"):
        record_story(loaded, story, ["resid"], tmp_path, layers=[0], dtype="float16",
                     **SMALL_WINDOWS)
    with pytest.raises(ValueError, match="float32"):
        record_story(loaded, story, ["resid"], tmp_path, layers=[0], dtype="float16",
                     to_tr=TrResampling(zscore=False), **SMALL_WINDOWS)
    assert not any(tmp_path.iterdir())  # nothing half-written is left


def test_storage_dtype_defaults():
    assert storage_dtype(None, torch.device("cpu")) == "float32"
    assert storage_dtype(None, torch.device("cuda")) == "float16"
    assert storage_dtype("bfloat16", torch.device("cpu")) == "bfloat16"


def test_tr_recording_with_many_kernel_pieces(causal, word_recording, tmp_path, monkeypatch):
    """Batches cut into 7-word kernels (pieces straddle batches and runs) change nothing."""
    import brainalign.record.to_tr as to_tr

    monkeypatch.setattr(to_tr, "SEGMENT_WORDS", 7)
    resampling = TrResampling(method="hrf", zscore=False)
    reference = recording_to_tr(word_recording, "hrf", zscore=False, device="cpu")
    recorded = NeuronTimecourses.load(record_story(causal, word_recording.story, SITES,
                                                   tmp_path, to_tr=resampling, **SMALL_WINDOWS))
    np.testing.assert_allclose(recorded.data, reference.data, rtol=0,
                               atol=1e-5 * np.abs(reference.data).max())


def test_shards_in_small_pieces_verify_and_catch_corruption(causal, word_recording, tmp_path,
                                                            monkeypatch):
    """Pieces of 2 kB hashed on several threads, waited for on disk every 4 kB (flushed,
    without sync_file_range): the same bytes, a checksum that verifies, and one that
    catches a single changed value."""
    import brainalign.record.recorder as recorder
    import brainalign.record.store as store

    monkeypatch.setattr(store, "SYNC_BYTES", 4096)
    monkeypatch.setattr(store, "WRITEBACK_BYTES", 4096)
    monkeypatch.setattr(recorder, "HOST_BUFFER_BYTES", 2048)
    monkeypatch.setattr(recorder, "hash_threads", lambda: 3)
    path = record_story(causal, word_recording.story, SITES, tmp_path, **SMALL_WINDOWS)
    recording = Recording.open(path, verify=True)
    for site in SITES:
        np.testing.assert_array_equal(recording.block(site, 2), word_recording.block(site, 2))
    checksum = recording.manifest["checksums"]["mlp.inner/L02.npy"]
    assert len(checksum["piece_rows"]) > 20 and sum(checksum["piece_rows"]) == 400
    assert store.verify_checksums(path) == []
    shard = np.load(path / "mlp.inner" / "L02.npy", mmap_mode="r+")
    shard[217, 5] += 1.0  # a finite value changed in a middle piece
    shard.flush()
    del shard
    assert store.verify_checksums(path) == ["mlp.inner/L02.npy"]


def test_truncated_or_changed_shards_are_caught_on_open_and_read(causal, word_recording,
                                                                 tmp_path, monkeypatch):
    import shutil

    import brainalign.record.recorder as recorder

    monkeypatch.setattr(recorder, "HOST_BUFFER_BYTES", 4096)  # several pieces per shard
    path = record_story(causal, word_recording.story, ["resid"], tmp_path / "a",
                        **SMALL_WINDOWS)
    copy = tmp_path / "b" / path.name
    shutil.copytree(path, copy)
    shard = path / "resid" / "L01.npy"
    with open(shard, "r+b") as handle:  # truncated by a full disk or an interrupted copy
        handle.truncate(shard.stat().st_size - 100)
    with pytest.raises(IncompleteRecordingError, match=r"resid/L01\.npy.*truncated"):
        Recording.open(path)

    changed = np.load(copy / "resid" / "L01.npy", mmap_mode="r+")
    changed[301, 7] = 0.5  # finite, plausible garbage in the second run's rows
    changed.flush()
    del changed
    recording = Recording.open(copy)  # sizes are right
    np.testing.assert_array_equal(recording.block("resid", 0), word_recording.block("resid", 0))
    with pytest.raises(IncompleteRecordingError, match=r"L01\.npy: rows \d+\.\.\d+ differ"):
        recording.block("resid", 1)
    with pytest.raises(IncompleteRecordingError, match="CRC-32"):
        recording_to_tr(recording, device="cpu")
    unchecked = Recording.open(copy, check_blocks=False)
    assert unchecked.block("resid", 1)[301, 7] == np.float32(0.5)


def test_tr_stream_zscores_like_zscore_runs_with_constant_neurons():
    """On the device, as offline: a neuron constant within a run becomes 0 there."""
    from brainalign.record.to_tr import TrStream
    from brainalign.timecourse import zscore_runs

    story = scanned_story()
    stream = TrStream(story, TrResampling(), {"L00.mlp.out": 4}, torch.device("cpu"),
                      torch.float32)
    n_rows = story.n_volumes[0]
    values = np.random.default_rng(0).standard_normal((n_rows, 4)).astype(np.float32)
    values[:, 1], values[:, 2] = 1000.1, 0.0
    stream._accumulator(0).copy_(torch.from_numpy(values))
    ((run, rows),) = stream.finished_runs(1)
    np.testing.assert_allclose(rows.numpy(), zscore_runs(values.astype(np.float64)), atol=1e-5)
    assert run == 0 and np.all(rows.numpy()[:, 1:3] == 0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_tr_recording_in_memory_equals_the_one_on_disk(causal, word_recording, tmp_path,
                                                       monkeypatch, dtype):
    """record_timecourses gives the bytes record_story writes, through host buffers of a
    few rows (each run's rows cross in several pieces), and the provenance of a recording."""
    import brainalign.record.recorder as recorder

    resampling = TrResampling(method="hrf", trim=(2, 1))
    on_disk = NeuronTimecourses.load(record_story(causal, word_recording.story, SITES,
                                                  tmp_path, to_tr=resampling, dtype=dtype,
                                                  **SMALL_WINDOWS))
    n_neurons = on_disk.n_neurons
    monkeypatch.setattr(recorder, "HOST_BUFFER_BYTES", 5 * n_neurons * 2)  # 5 / 10 rows
    in_memory = record_timecourses(causal, word_recording.story, SITES, to_tr=resampling,
                                   dtype=dtype, **SMALL_WINDOWS)
    assert in_memory.data.dtype == np.dtype(dtype) and not isinstance(in_memory.data, np.memmap)
    np.testing.assert_array_equal(in_memory.data, on_disk.data)
    np.testing.assert_array_equal(in_memory.times_s, on_disk.times_s)
    np.testing.assert_array_equal(in_memory.runs, on_disk.runs)
    np.testing.assert_array_equal(in_memory.neurons.unit, on_disk.neurons.unit)
    reference = recording_to_tr(word_recording, "hrf", trim=(2, 1), device="cpu")
    np.testing.assert_allclose(in_memory.data.astype(np.float64), reference.data, rtol=2.0 ** -11,
                               atol=1e-5 * np.abs(reference.data).max())
    for key in ("method", "trim", "zscore", "first_volume_s", "hrf"):
        assert in_memory.provenance[key] == on_disk.provenance[key], key
    recording = in_memory.provenance["recording"]
    assert recording["grid"] == "tr" and recording["stored_dtype"] == dtype
    manifest = json.loads((tmp_path / word_recording.story.name / "manifest.json").read_text())
    assert recording["settings_hash"] == manifest["settings_hash"]
    assert recording["timing"]["n_windows"] == manifest["timing"]["n_windows"]


def test_tr_recording_in_memory_refusals(causal, word_recording):
    with pytest.raises(ValueError, match="to_tr=True"):
        record_timecourses(causal, word_recording.story, SITES, to_tr=False, **SMALL_WINDOWS)
    with pytest.raises(ValueError, match="scan"):
        record_timecourses(causal, make_story(50, name="no-scan"), SITES, **SMALL_WINDOWS)
    with pytest.raises(ValueError, match="float16 or float32"):
        record_timecourses(causal, word_recording.story, SITES, dtype="bfloat16",
                           **SMALL_WINDOWS)
