"""Event-driven reactors for every association of the archive, accepted or requested.

pynetdicom runs two polling loops per association: the DUL thread sleeps 1 ms whenever a pass
finds nothing to do, and the association thread sleeps 1 ms before every look at its message
queue. Every C-STORE therefore waits for up to three such sleeps (the request being noticed on
the socket, the decoded message being picked up, the response leaving), about 2.7 ms per
instance measured with ``storescu`` on the 2-core development machine, a quarter of a bare
receiver's time. Here both loops block instead: the DUL thread in ``select`` on the socket and a
wake-up socket, the association thread on an event, each woken by the queues it reads from.
Both still wake every :data:`MAX_IDLE` seconds, so timers (ARTIM, network and DIMSE timeouts)
fire as before.

:func:`make_event_driven` converts a freshly created :class:`Association`, accepted by the
listener or requested by :class:`pacs.dimse.overrides.requestor.ArchiveAE`; the loops below are
pynetdicom 3.0's own with the sleeps replaced and the reactor's checkpoint race closed (see
:class:`EventDrivenAssociation`), nothing else changed.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.association import LOGGER as ASSOC_LOG
from pynetdicom.association import Association
from pynetdicom.dul import LOGGER as DUL_LOG
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

#: Longest a reactor blocks without anything happening before it looks at its timers again.
MAX_IDLE = 0.1


class _WakeSocket:
    """A socket pair that wakes a thread blocked in ``select``: one byte per wake, drained on wake-up."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake is pending anyway) or closed
            self._w.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while self._r.recv(4096):
                pass

    def close(self) -> None:
        self._r.close()
        self._w.close()


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` after every put, so its reader need not poll."""

    def __init__(self, wake: Callable[[], None], replaces: queue.Queue[Any]) -> None:
        super().__init__()
        self._wake = wake
        while True:  # take over what is already queued (the connection event, say)
            try:
                self.queue.append(replaces.get_nowait())
            except queue.Empty:
                break

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class EventDrivenDUL(DULServiceProvider):
    """The DUL service provider, blocking in ``select`` instead of sleeping between passes."""

    _wake: _WakeSocket
    _on_exit: Callable[[], None]

    def kill_dul(self) -> None:
        self._kill_thread = True
        self._wake.set()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._wake.set()
            if self.is_alive() and threading.current_thread() is not self:
                self.join()
            return True
        return False

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """pynetdicom's, except that a wait ends as soon as this DUL has stopped: once the connection
        is gone nothing more can arrive, and an acceptor waiting for its A-ASSOCIATE-RQ would otherwise
        keep its thread (and socket) for the whole ACSE timeout after the peer has left."""
        if not wait:
            return super().receive_pdu(wait=False)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = MAX_IDLE if deadline is None else min(MAX_IDLE, deadline - time.monotonic())
            primitive = super().receive_pdu(wait=left > 0, timeout=max(left, 0.0))
            if primitive is not None:
                return primitive
            if self._kill_thread:
                return super().receive_pdu(wait=False)  # what the last pass may have queued before it stopped
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _wait_for_work(self) -> None:
        """Block until the socket is readable, a primitive is queued, the thread is killed or MAX_IDLE passes."""
        assoc_socket = self.socket
        sock = assoc_socket.socket if assoc_socket is not None else None
        if sock is None:
            time.sleep(0.001)  # closing down (Sta13 without a socket): pynetdicom's own pace
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already buffered: select would not see them
        try:
            select.select([sock.fileno(), self._wake.fileno()], [], [], MAX_IDLE)
        except (OSError, ValueError):
            return  # closed meanwhile: the next pass finds out
        self._wake.drain()

    def run(self) -> None:
        # The thread's target was bound to the stock loop when the provider was created.
        self.run_reactor()

    def run_reactor(self) -> None:  # pynetdicom.dul.DULServiceProvider.run_reactor, sleep -> _wait_for_work
        try:
            self._run_event_driven()
        finally:
            self._on_exit()
            self._wake.close()

    def _run_event_driven(self) -> None:
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                # Either send what the user queued or receive from the peer, one per pass.
                if not self._process_recv_primitive() and self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                # As pynetdicom: bypass the state machine, send an A-ABORT and stop both reactors.
                DUL_LOG.exception("Exception in DUL.run(), aborting association")
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            sleep = False


class EventDrivenAssociation(Association):
    """An association whose reactor waits on an event instead of sleeping 1 ms per pass, and never
    reads the DIMSE queue while a ``send_*`` waits there for its response.

    pynetdicom's ``send_*`` and ``release`` pause the reactor by clearing ``_reactor_checkpoint``,
    wait until ``_is_paused`` is True, then send and read the response off the DIMSE queue.
    pynetdicom's reactor sets ``_is_paused`` False only *after* its ``wait()`` on the checkpoint has
    returned: a sender that clears the checkpoint in between sees ``_is_paused`` still True and
    sends, while the reactor goes on to read the queue. When the response arrives before the sender
    reads it (a preempted thread, a peer that answers at once), the reactor takes it ("Received
    unexpected C-STORE service message"), the sender waits for the DIMSE timeout and aborts, and
    every later sub-operation of a C-MOVE fails. Here the reactor looks at the checkpoint again
    after clearing ``_is_paused``. A sender clears the checkpoint before it reads ``_is_paused``, so
    either the reactor sees the checkpoint cleared and goes back to wait, or the sender sees
    ``_is_paused`` False and waits for the reactor's next pause: they never read the queue together.
    """

    _activity: threading.Event

    def _run_reactor(self) -> None:  # pynetdicom.association.Association._run_reactor, sleep -> wait
        self._is_paused = False
        while not self._kill:
            # Paused while waiting: nothing is taken off a queue until the checkpoint is passed.
            self._is_paused = True
            self._activity.wait(MAX_IDLE)
            self._activity.clear()
            self._reactor_checkpoint.wait()
            self._is_paused = False
            if not self._reactor_checkpoint.is_set():
                continue  # a sender paused the reactor after wait() returned: the queue is the sender's
            if self._serve_next():
                return

    def _serve_next(self) -> bool:
        """One pass of pynetdicom's acceptor loop; True when the association has ended."""
        context_id, msg = self.dimse.get_msg(block=False)
        if msg:
            self._serve_request(msg, context_id)  # type: ignore[arg-type]
            self._activity.set()  # look again at once: more may have arrived meanwhile
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            ASSOC_LOG.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            ASSOC_LOG.info("Association Aborted")
            self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            ASSOC_LOG.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


def make_event_driven(assoc: Any, association_class: type[EventDrivenAssociation] = EventDrivenAssociation) -> None:
    """Give a new association (its DUL thread not yet started) event-driven reactors."""
    dul = assoc.dul
    if dul.is_alive():
        raise RuntimeError("the association's DUL thread is already running")
    activity = threading.Event()
    wake = _WakeSocket()
    assoc._activity = activity
    dul._wake = wake
    dul._on_exit = activity.set  # the association notices at once that its DUL has stopped
    dul.to_provider_queue = _WakingQueue(wake.set, dul.to_provider_queue)
    dul.event_queue = _WakingQueue(wake.set, dul.event_queue)
    dul.to_user_queue = _WakingQueue(activity.set, dul.to_user_queue)
    assoc.dimse.msg_queue = _WakingQueue(activity.set, assoc.dimse.msg_queue)
    dul.__class__ = EventDrivenDUL
    assoc.__class__ = association_class
