"""Objects read ahead, in order, into reused buffers: the bytes of a retrieve, ready to send.

A retrieve sends many stored objects one after the other, each framed by a few bytes of its
protocol (a multipart part head and tail). Here the framing and the objects are laid out
contiguously in large buffers ("batches"), so the sender writes one buffer per batch and nothing
is copied again on the way out. Batches are filled by worker threads, several at once (bounded by
the store's :attr:`~pacs.storage.base.ObjectStore.read_concurrency`), and handed out strictly in
order. Buffers come from a :class:`BufferPool`, so a retrieve does not fault in fresh memory for
every object.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from pacs.errors import StorageUnavailable
from pacs.storage.base import ObjectStore

log = logging.getLogger(__name__)

BATCH_BYTES = 4 * 1024 * 1024
"""Size of one batch buffer: one write to the client; objects larger than this are read in ranges."""
BATCH_OBJECTS = 16
"""Objects per batch at most, so that small objects on a latency-bound store are still read concurrently."""
WINDOW_BATCHES = 8
"""Batches read ahead of the one being sent, at most (with batches of 4 MiB: 32 MiB per retrieve)."""

_WORKERS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="object-reader")


class BufferPool:
    """Fixed-size bytearrays handed out again once nothing refers to them any more.

    A buffer given to a sender (as a memoryview) may still be queued in the transport after the
    send call returns; a memoryview keeps a reference to its bytearray, so a buffer is idle only
    when its reference count is that of a buffer held by the pool alone. The count is compared with
    that of a sentinel held the same way, never with a constant.
    """

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._lock = threading.Lock()
        self._held: list[bytearray] = [bytearray(0)]  # [0]: the sentinel, never handed out

    def take(self) -> bytearray:
        """An idle buffer of :attr:`size` bytes (contents undefined), or a new one."""
        held = self._held
        with self._lock:
            idle = sys.getrefcount(held[0])
            for i in range(1, len(held)):
                if sys.getrefcount(held[i]) == idle:
                    return held[i]
            buffer = bytearray(self.size)
            if len(held) <= self.keep:
                held.append(buffer)
            return buffer

    def __len__(self) -> int:
        """Buffers the pool holds (in use or idle)."""
        return len(self._held) - 1


POOL = BufferPool(BATCH_BYTES, keep=16)


@dataclass(frozen=True, slots=True)
class Piece:
    """``prefix``, then the ``size`` bytes of the stored object ``key``, then ``suffix``, contiguous on the wire.

    ``produce`` replaces the stored object when the bytes must be made (e.g. transcoded): it runs in
    a worker and its result is sent as is, framed by ``frame(len(result))`` instead of prefix/suffix.
    """

    key: str
    size: int
    prefix: bytes = b""
    suffix: bytes = b""
    produce: Callable[[], bytes] | None = None
    frame: Callable[[int], tuple[bytes, bytes]] | None = None


@dataclass(slots=True)
class _Batch:
    """What one worker writes into one buffer: framing bytes and ranges of stored objects."""

    steps: list[tuple[bytes, str, int, int]] = field(default_factory=list)  # (bytes before, key, offset, length)
    used: int = 0
    objects: int = 0
    produce: Piece | None = None  # a made (transcoded) piece: a batch of its own


def _plan(pieces: Iterable[Piece], trailer: bytes) -> Iterator[_Batch]:
    """Pack pieces into batches in order; an object never straddles two batches unless larger than one.

    Framing bytes that do not fit after an object (``pending``) open the next batch, which is empty.
    """
    batch = _Batch()
    pending = b""  # framing bytes waiting for the next step
    for piece in pieces:
        if piece.produce is not None:
            if batch.steps:
                yield batch
                batch = _Batch()
            yield _Batch(steps=[(pending, "", 0, 0)] if pending else [], produce=piece)
            pending = b""
            continue
        need = len(pending) + len(piece.prefix) + piece.size + len(piece.suffix)
        if batch.steps and (batch.used + need > BATCH_BYTES or batch.objects >= BATCH_OBJECTS):
            yield batch
            batch = _Batch()
        offset = 0
        head = pending + piece.prefix
        while True:
            room = BATCH_BYTES - batch.used - len(head)
            length = min(piece.size - offset, room)
            batch.steps.append((head, piece.key, offset, length))
            batch.used += len(head) + length
            head = b""
            offset += length
            if offset >= piece.size:
                break
            yield batch
            batch = _Batch()
        batch.objects += 1
        pending = piece.suffix
        if batch.used + len(pending) > BATCH_BYTES:
            yield batch
            batch = _Batch()
        else:
            batch.used += len(pending)
            batch.steps.append((pending, "", 0, 0))
            pending = b""
    pending += trailer
    if batch.steps and batch.used + len(pending) > BATCH_BYTES:
        yield batch
        batch = _Batch()
    if pending:
        batch.steps.append((pending, "", 0, 0))
    if batch.steps:
        yield batch


def _fill(store: ObjectStore, pool: BufferPool, batch: _Batch) -> memoryview | bytes:
    """Read one batch (in a worker); a stored object shorter than the index says is an error."""
    if batch.produce is not None:
        piece = batch.produce
        assert piece.produce is not None and piece.frame is not None
        data = piece.produce()
        head, tail = piece.frame(len(data))
        return b"".join([*(before for before, *_ in batch.steps), head, data, tail])
    buffer = pool.take()
    view = memoryview(buffer)
    at = 0
    for before, key, offset, length in batch.steps:
        view[at : at + len(before)] = before
        at += len(before)
        if length:
            got = 0
            while got < length:
                n = store.read_into(key, offset + got, view[at + got : at + length])
                if n <= 0:
                    raise StorageUnavailable(f"object {key} is shorter than the index records "
                                             f"({offset + got} of at least {offset + length} bytes)")
                got += n
            at += length
    return view[:at]


def read_ahead(store: ObjectStore, pieces: Iterable[Piece], *, trailer: bytes = b"", pool: BufferPool | None = None,
               executor: ThreadPoolExecutor = _WORKERS) -> Iterator[Future[memoryview | bytes]]:  # fmt: skip
    """The bytes of ``pieces`` (then ``trailer``) in order, as futures of consecutive buffers.

    At most ``store.read_concurrency`` batches (and :data:`WINDOW_BATCHES`) are submitted and not
    yet taken by the consumer, so no more are read at once. A buffer stays the consumer's until
    nothing refers to it. Closing the iterator cancels the batches not yet started.
    """
    window: deque[Future[memoryview | bytes]] = deque()
    ahead = max(1, min(store.read_concurrency, WINDOW_BATCHES))
    pool = pool if pool is not None else POOL  # looked up per call (tests swap it)
    plan = iter(_plan(pieces, trailer))
    first, second = next(plan, None), None
    if first is not None:
        second = next(plan, None)
    if first is not None and second is None:
        # One batch (a single instance or frame): read it here, in the caller's thread, sparing a
        # hand-over to a worker and back, which cost as much CPU as the read itself.
        done: Future[memoryview | bytes] = Future()
        try:
            done.set_result(_fill(store, pool, first))
        except BaseException as exc:  # the consumer's result() raises it, as a worker's would
            done.set_exception(exc)
        yield done
        return
    try:
        for batch in itertools.chain([b for b in (first, second) if b is not None], plan):
            if len(window) >= ahead:
                yield window.popleft()
            window.append(executor.submit(_fill, store, pool, batch))
        while window:
            yield window.popleft()
    finally:
        for fut in window:
            fut.cancel()
