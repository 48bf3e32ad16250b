"""How many connections each serving process of one ``cloudfilm serve --processes N`` holds, in memory
the processes share, so that a new connection goes to the least busy one.

The processes share each listening socket: the kernel wakes every process on a new connection and
the first to accept it wins, mostly the same one, so long-lived connections (HTTP keep-alive, DICOM
associations) pile up on one process while the others idle. With the board, a process holding more
connections than its least busy sibling waits a little before it accepts (:meth:`ConnectionBoard.defer`),
which lets the sibling take it; a process holding no more than any sibling accepts at once, so a
balanced node adds no latency. Each process writes only its own slot; a slot of a process that is not
running is marked absent by the supervisor and ignored.
"""

from __future__ import annotations

import enum
import mmap
import os
import struct

DEFER_S = 0.005
"""Wait before accepting, per connection held beyond the least busy sibling's count."""
MAX_DEFER_S = 0.05
"""The longest wait before accepting: a sibling that does not accept (stopped, stuck) costs no more."""
ABSENT = -1
_SLOT = struct.Struct("=q")


class Kind(enum.IntEnum):
    HTTP = 0
    DICOM = 1


class ConnectionBoard:
    """Per process and kind of connection, the count of open connections (see the module's docstring)."""

    def __init__(self, fd: int, processes: int, slot: int | None) -> None:
        """Map the board behind ``fd`` (made by :meth:`create`); ``slot`` is this process's (None for the
        supervisor, which writes no count of its own)."""
        self.fd = fd
        self.processes = processes
        self.slot = slot
        self._map = mmap.mmap(fd, processes * len(Kind) * _SLOT.size)

    @classmethod
    def create(cls, processes: int) -> ConnectionBoard:
        """A new board (the supervisor's), every slot absent; its ``fd`` is passed to the processes."""
        fd = os.memfd_create("cloudfilm-connections", 0)
        os.ftruncate(fd, processes * len(Kind) * _SLOT.size)
        board = cls(fd, processes, None)
        for slot in range(processes):
            board.mark_absent(slot)
        return board

    def _offset(self, slot: int, kind: Kind) -> int:
        return (slot * len(Kind) + kind) * _SLOT.size

    def _read(self, slot: int, kind: Kind) -> int:
        return int(_SLOT.unpack_from(self._map, self._offset(slot, kind))[0])

    def _write(self, slot: int, kind: Kind, value: int) -> None:
        _SLOT.pack_into(self._map, self._offset(slot, kind), value)  # 8 aligned bytes: never seen torn

    def mark_absent(self, slot: int) -> None:
        """The process in ``slot`` is not running (the supervisor, before a start and after an exit)."""
        for kind in Kind:
            self._write(slot, kind, ABSENT)

    def held(self, kind: Kind, count: int) -> None:
        """This process now holds ``count`` connections of ``kind``."""
        assert self.slot is not None
        self._write(self.slot, kind, count)  # the latest count wins, whichever thread writes it

    def counts(self, kind: Kind) -> list[int]:
        """Every slot's count of ``kind`` (:data:`ABSENT` for a process not running)."""
        return [self._read(slot, kind) for slot in range(self.processes)]

    def defer(self, kind: Kind) -> float:
        """Seconds to wait before accepting a connection of ``kind``: none unless this process holds
        more than a running sibling."""
        assert self.slot is not None
        mine = max(self._read(self.slot, kind), 0)
        others = [n for slot, n in enumerate(self.counts(kind)) if slot != self.slot and n != ABSENT]
        if not others or mine <= min(others):
            return 0.0
        return min(DEFER_S * (mine - min(others)), MAX_DEFER_S)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)
