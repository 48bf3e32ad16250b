"""The connection board of ``serve --processes N`` (pacs.connection_board): each process sees its
siblings' counts through shared memory and waits before accepting only while it holds more."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from pacs.connection_board import ABSENT, DEFER_S, MAX_DEFER_S, ConnectionBoard, Kind


@pytest.fixture
def boards() -> Iterator[list[ConnectionBoard]]:
    """The supervisor's board and three processes' views of it (each on its own descriptor)."""
    supervisor = ConnectionBoard.create(3)
    views = [ConnectionBoard(os.dup(supervisor.fd), 3, slot) for slot in range(3)]
    yield [supervisor, *views]
    for board in (supervisor, *views):
        board.close()


def test_every_slot_starts_absent_and_an_absent_sibling_is_not_waited_for(boards: list[ConnectionBoard]) -> None:
    supervisor, first, _second, _third = boards
    assert supervisor.counts(Kind.HTTP) == [ABSENT] * 3 == supervisor.counts(Kind.DICOM)
    first.held(Kind.HTTP, 40)
    assert first.defer(Kind.HTTP) == 0.0  # alone: nobody else could take the connection


def test_the_busier_process_waits_in_proportion_and_never_long(boards: list[ConnectionBoard]) -> None:
    _supervisor, first, second, third = boards
    first.held(Kind.HTTP, 5)
    second.held(Kind.HTTP, 3)
    third.held(Kind.HTTP, 4)
    assert second.defer(Kind.HTTP) == 0.0  # the least busy accepts at once
    assert third.defer(Kind.HTTP) == pytest.approx(DEFER_S)
    assert first.defer(Kind.HTTP) == pytest.approx(2 * DEFER_S)
    first.held(Kind.HTTP, 500)
    assert first.defer(Kind.HTTP) == MAX_DEFER_S  # a stuck sibling costs at most this per connection
    second.held(Kind.HTTP, 5)
    third.held(Kind.HTTP, 5)
    first.held(Kind.HTTP, 5)
    assert [b.defer(Kind.HTTP) for b in (first, second, third)] == [0.0] * 3  # balanced: nobody waits


def test_kinds_are_counted_apart_and_an_exited_process_is_forgotten(boards: list[ConnectionBoard]) -> None:
    supervisor, first, second, _third = boards
    first.held(Kind.DICOM, 4)
    second.held(Kind.DICOM, 0)
    second.held(Kind.HTTP, 9)
    first.held(Kind.HTTP, 9)
    assert first.defer(Kind.DICOM) > 0 and first.defer(Kind.HTTP) == 0.0
    supervisor.mark_absent(1)  # the second process exited
    assert first.defer(Kind.DICOM) == 0.0
    assert supervisor.counts(Kind.DICOM) == [4, ABSENT, ABSENT]


def test_counts_cross_processes(boards: list[ConnectionBoard]) -> None:
    """A child process given the descriptor (as ``serve``'s supervisor passes it) writes its slot."""
    supervisor, first, _second, _third = boards
    first.held(Kind.HTTP, 0)
    code = ("import sys; from pacs.connection_board import ConnectionBoard, Kind; "
            "ConnectionBoard(int(sys.argv[1]), 3, 2).held(Kind.HTTP, 7)")
    subprocess.run([sys.executable, "-c", code, str(supervisor.fd)], check=True, pass_fds=[supervisor.fd])
    assert supervisor.counts(Kind.HTTP) == [0, ABSENT, 7]
    assert first.defer(Kind.HTTP) == 0.0
