"""Objects read ahead into reused buffers (pacs.storage.readahead), on the filesystem and on a real S3."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from pacs.errors import NotFound, StorageUnavailable
from pacs.storage import readahead
from pacs.storage.base import ObjectStore
from pacs.storage.readahead import BufferPool, Piece, read_ahead

KiB = 1024


def _data(i: int, size: int) -> bytes:
    return bytes((i * 31 + j) % 251 for j in range(size))


def _drain(futures: Iterator[Future[memoryview | bytes]]) -> bytes:
    return b"".join(bytes(f.result()) for f in futures)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 64 KiB and at most 4 objects: a few small objects already make many batches."""
    monkeypatch.setattr(readahead, "BATCH_BYTES", 64 * KiB)
    monkeypatch.setattr(readahead, "BATCH_OBJECTS", 4)


def test_pieces_arrive_in_order_with_their_framing(object_store: ObjectStore, small_batches: None) -> None:
    sizes = [0, 1, 10 * KiB, 64 * KiB, 64 * KiB - 10, 200 * KiB, 3, 70 * KiB, 5 * KiB, 5 * KiB, 5 * KiB, 5 * KiB]
    expected = b""
    pieces = []
    for i, size in enumerate(sizes):
        data = _data(i, size)
        key = f"1.2.3/1.2.3.{i}/obj{i}.dcm"
        object_store.put_bytes(key, data)
        head, tail = f"<head {i}>".encode(), f"</{i}>\r\n".encode()
        pieces.append(Piece(key, size, head, tail))
        expected += head + data + tail
    got = _drain(read_ahead(object_store, pieces, trailer=b"--end--"))
    assert got == expected + b"--end--"


def test_made_pieces_are_framed_by_their_own_length(object_store: ObjectStore, small_batches: None) -> None:
    object_store.put_bytes("1.2/1.2.3/a.dcm", b"stored")
    pieces = [Piece("1.2/1.2.3/a.dcm", 6, b"[", b"]"),
              Piece("1.2/1.2.3/a.dcm", 6, produce=lambda: b"made longer", frame=lambda n: (f"<{n}>".encode(), b"!")),
              Piece("1.2/1.2.3/a.dcm", 6, b"(", b")")]  # fmt: skip
    assert _drain(read_ahead(object_store, pieces, trailer=b".")) == b"[stored]<11>made longer!(stored)."


class _Watched:
    """Wraps a real store: counts the reads running at once, optionally slows or breaks some."""

    def __init__(self, store: ObjectStore, delay: float = 0.0, broken: str | None = None) -> None:
        self._store = store
        self.read_concurrency = store.read_concurrency
        self.delay = delay
        self.broken = broken
        self.running = 0
        self.most = 0
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def read_into(self, key: str, offset: int, buffer: memoryview) -> int:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.keys.append(key)
        try:
            time.sleep(self.delay)
            if key == self.broken:
                raise StorageUnavailable("the object store went away")
            return self._store.read_into(key, offset, buffer)
        finally:
            with self._lock:
                self.running -= 1


def _stored(store: ObjectStore, n: int, size: int) -> list[Piece]:
    pieces = []
    for i in range(n):
        key = f"1.2.3/1.2.3.4/o{i:03d}.dcm"
        store.put_bytes(key, _data(i, size))
        pieces.append(Piece(key, size, f"{i}:".encode(), b";"))
    return pieces


def test_reads_run_concurrently_but_bounded(object_store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "BATCH_OBJECTS", 1)  # one object per batch: one read per batch
    pieces = _stored(object_store, 40, 2 * KiB)
    watched = _Watched(object_store, delay=0.02)
    watched.read_concurrency = 5
    got = _drain(read_ahead(watched, pieces))  # type: ignore[arg-type]
    assert got == b"".join(f"{i}:".encode() + _data(i, 2 * KiB) + b";" for i in range(40))
    assert 2 <= watched.most <= 5, watched.most


def test_s3_reads_several_objects_at_once(s3_store: ObjectStore) -> None:
    """On S3 every read waits on the network: a retrieve keeps many GETs in flight."""
    assert s3_store.read_concurrency >= 8
    pieces = _stored(s3_store, 64, 4 * KiB)
    watched = _Watched(s3_store, delay=0.01)
    _drain(read_ahead(watched, pieces))  # type: ignore[arg-type]
    assert watched.most >= 4, watched.most


def test_a_failure_surfaces_at_its_place_and_cancels_the_rest(object_store: ObjectStore,
                                                              small_batches: None) -> None:  # fmt: skip
    pieces = _stored(object_store, 40, 20 * KiB)
    watched = _Watched(object_store, broken=pieces[10].key)
    futures = read_ahead(watched, pieces)  # type: ignore[arg-type]
    got = b""
    with pytest.raises(StorageUnavailable):
        for fut in futures:
            got += bytes(fut.result())
    futures.close()
    # everything before the broken object's batch arrived intact, in order
    whole = b"".join(f"{i}:".encode() + _data(i, 20 * KiB) + b";" for i in range(40))
    assert got and whole.startswith(got) and len(got) < whole.index(b"10:")
    time.sleep(0.1)
    assert len(watched.keys) < 40, "reads far beyond the failure were not cancelled"


def test_a_missing_or_short_object_is_an_error(object_store: ObjectStore) -> None:
    object_store.put_bytes("1.2/1.2.3/short.dcm", b"12345")
    with pytest.raises(StorageUnavailable, match="shorter"):
        _drain(read_ahead(object_store, [Piece("1.2/1.2.3/short.dcm", 10)]))
    with pytest.raises(NotFound):
        _drain(read_ahead(object_store, [Piece("1.2/1.2.3/gone.dcm", 10)]))


def test_pool_reuses_a_buffer_only_once_nothing_refers_to_it() -> None:
    pool = BufferPool(1024, keep=4)
    first = pool.take()
    view: Any = memoryview(first)[:10]
    del first
    second = pool.take()
    assert second is not view.obj, "a buffer still referred to by a view was handed out again"
    del view
    gc.collect()
    third = pool.take()
    assert len(pool) == 2 and third is not second  # the first one, idle again
    fourth = pool.take()
    assert all(fourth is not b for b in (second, third))


def test_pool_keeps_a_bounded_number_of_buffers() -> None:
    pool = BufferPool(16, keep=3)
    held = [pool.take() for _ in range(10)]
    assert len(pool) == 3 and len(held) == 10
