"""ShardWriter's disk traffic: early writeback (Linux ``sync_file_range``), its bound on the
bytes in flight, and the periodic-fdatasync fallback, each checked on the bytes on disk."""

from __future__ import annotations

import os

import numpy as np
import pytest

import brainalign.record.store as store
from brainalign.record.store import ShardWriter, pieces_checksum

N_PIECES, PIECE_ROWS, WIDTH = 20, 16, 64
PIECE_BYTES = PIECE_ROWS * WIDTH * 4


def _write_shard(path):
    """20 pieces of 16 float32 rows through a ShardWriter; the rows and the close() result."""
    rows = np.random.default_rng(0).standard_normal((N_PIECES * PIECE_ROWS, WIDTH)).astype(
        np.float32)
    writer = ShardWriter(path, rows.shape)
    for piece in np.split(rows, N_PIECES):
        writer.append(piece)
    return rows, writer.close()


@pytest.mark.skipif(store.sync_file_range is None, reason="sync_file_range is Linux only")
def test_writeback_starts_every_piece_in_order_and_bounds_bytes_in_flight(tmp_path,
                                                                          monkeypatch):
    """Each piece is handed to the disk as it is written (its exact byte range, in file
    order); once more than WRITEBACK_BYTES are in flight the oldest are waited for, so at
    most WRITEBACK_BYTES + one piece are ever outstanding; the file is the rows."""
    real, calls = store.sync_file_range, []

    def spy(fileno, start, length, flags):
        calls.append((start, length, flags))
        return real(fileno, start, length, flags)

    monkeypatch.setattr(store, "sync_file_range", spy)
    monkeypatch.setattr(store, "WRITEBACK_BYTES", 3 * PIECE_BYTES)
    rows, checksum = _write_shard(tmp_path / "shard.npy")

    np.testing.assert_array_equal(np.load(tmp_path / "shard.npy"), rows)
    assert pieces_checksum(tmp_path / "shard.npy", checksum["piece_rows"]) == \
        checksum["sha256_of_pieces"]
    started = [(s, n) for s, n, flags in calls if flags == store.SYNC_FILE_RANGE_WRITE]
    waited = [(s, n) for s, n, flags in calls if flags != store.SYNC_FILE_RANGE_WRITE]
    header_bytes = os.path.getsize(tmp_path / "shard.npy") - rows.nbytes
    assert started == [(header_bytes + i * PIECE_BYTES, PIECE_BYTES) for i in range(N_PIECES)]
    assert waited == started[:len(waited)] and len(waited) == N_PIECES - 3  # oldest first
    assert {flags for s, n, flags in calls if (s, n) in waited} - {store.SYNC_FILE_RANGE_WRITE} \
        == {store.SYNC_FILE_RANGE_WAIT_BEFORE | store.SYNC_FILE_RANGE_WRITE
            | store.SYNC_FILE_RANGE_WAIT_AFTER}
    in_flight = most = 0
    for start, length, flags in calls:
        in_flight += length if flags == store.SYNC_FILE_RANGE_WRITE else -length
        most = max(most, in_flight)
    assert most <= 3 * PIECE_BYTES + PIECE_BYTES


@pytest.mark.parametrize("refused", [True, False], ids=["refused", "not-linux"])
def test_without_writeback_the_shard_is_flushed_every_sync_bytes(tmp_path, monkeypatch,
                                                                 refused):
    """Where sync_file_range is missing, or the file system refuses it (asked once, then
    not again), the writer falls back to an fdatasync every SYNC_BYTES; the file is the
    same rows either way."""
    asked, synced = [], []

    def refuse(fileno, start, length, flags):
        asked.append(start)
        return -1

    monkeypatch.setattr(store, "sync_file_range", refuse if refused else None)
    monkeypatch.setattr(store, "SYNC_BYTES", 4 * PIECE_BYTES)
    real_fdatasync = getattr(os, "fdatasync", os.fsync)
    monkeypatch.setattr(os, "fdatasync", lambda fileno: (synced.append(fileno),
                                                          real_fdatasync(fileno)),
                        raising=False)
    rows, checksum = _write_shard(tmp_path / "shard.npy")

    np.testing.assert_array_equal(np.load(tmp_path / "shard.npy"), rows)
    assert pieces_checksum(tmp_path / "shard.npy", checksum["piece_rows"]) == \
        checksum["sha256_of_pieces"]
    assert len(asked) == (1 if refused else 0)
    assert len(synced) == N_PIECES // 4
