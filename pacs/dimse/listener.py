"""The DICOM listener: one pynetdicom AE serving C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, Storage
Commitment, the Modality Worklist (C-FIND) and MPPS (N-CREATE/N-SET) on ``DICOM_PORT`` (and DICOM
TLS on ``DICOM_TLS_PORT``).

Each association runs on its own thread, so a slow peer never blocks the others. When an
association is requested the calling AE is identified (:mod:`pacs.dimse.security`) and only the
presentation contexts of the services it may use are offered (:mod:`pacs.dimse.contexts`).
"""

from __future__ import annotations

import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from weakref import WeakKeyDictionary

from pynetdicom import AE, _config, evt

from pacs import logs, metrics
from pacs.access import AccessScope, ScopeProvider
from pacs.archive import Archive
from pacs.connection_board import ConnectionBoard
from pacs.dimse import status
from pacs.dimse.commitment import CommitmentSCP
from pacs.dimse.contexts import MODALITY_WORKLIST_FIND, contexts_for, supported_contexts
from pacs.dimse.find import FindSCP
from pacs.dimse.intake import Intake
from pacs.dimse.mpps import PerformedStepSCP
from pacs.dimse.overrides.provider import discard_partial_dataset
from pacs.dimse.overrides.requestor import ArchiveAE
from pacs.dimse.overrides.transport import MIN_PDU_LIMIT, DicomRequestHandler, DicomServer, serving_on
from pacs.dimse.retrieve import GetSCP, MoveSCP
from pacs.dimse.security import AccessPolicy, Peer
from pacs.dimse.store import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, StoreSCP
from pacs.dimse.tls import client_context, server_context
from pacs.dimse.worklist import WorklistSCP
from pacs.partitions import DEFAULT_PARTITION
from pacs.settings import Settings

log = logging.getLogger(__name__)

_UNLIMITED = 2**31 - 1

# Process-wide pynetdicom switches: no spool file of pynetdicom's own for every C-STORE (the
# listener's associations receive into pacs.dimse.overrides.provider.SpillingBuffer instead); do not bind
# pynetdicom's per-PDU debug logging handlers (measurable on the receive path).
_config.STORE_RECV_CHUNKED_DATASET = False
_config.LOG_HANDLER_LEVEL = "none"


class DicomListener:
    """The archive's DICOM AE as a background service of ``cloudfilm serve`` (``start``/``stop``)."""

    name = "dicom"

    def __init__(self, archive: Archive, *, scope: ScopeProvider = AccessScope.everything,
                 sockets: tuple[socket.socket | None, socket.socket | None] = (None, None),
                 board: ConnectionBoard | None = None) -> None:
        """``scope``: what C-FIND, C-MOVE and C-GET may see, built per request (every study by default;
        ``cloudfilm serve`` hides the de-identified benchmark copies, see ai_plugins.benchmarks.visibility).
        ``sockets``: the plain and TLS listening sockets, already bound (by ``serve``'s supervisor, which
        shares them between its processes); a port without one is bound here. ``board``: the connections
        each of those processes holds, so that associations are spread between them."""
        self._archive = archive
        self._sockets = sockets
        self._board = board
        self._draining_since: float | None = None
        self._settings: Settings = archive.settings
        settings = self._settings
        self._policy = AccessPolicy(settings)
        self._intake = Intake(artim_s=settings.dicom_artim_timeout, max_associations=settings.dicom_max_associations,
                              max_per_address=settings.dicom_max_connections_per_address)
        self._ae = self._make_ae(settings)
        self._contexts = supported_contexts()
        self._peers: WeakKeyDictionary[Any, Peer] = WeakKeyDictionary()
        self._ids: WeakKeyDictionary[Any, str] = WeakKeyDictionary()  # admitted associations, for the logs
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._servers: list[DicomServer] = []
        self._partitions = archive.partitions
        self._store = StoreSCP(archive.ingest, self._partitions)
        titles = {p.id: p.ae_titles[0] for p in self._partitions.all() if p.id != DEFAULT_PARTITION}
        self._find = FindSCP(archive.engine, settings.ae_title, scope, titles)
        self._worklist = WorklistSCP(archive.engine)
        self._mpps = PerformedStepSCP(archive.engine)
        self._move = MoveSCP(archive.engine, archive.store, self._policy, self._client_tls, scope)
        self._get = GetSCP(archive.engine, archive.store, scope)
        self._commit = CommitmentSCP(archive.engine, archive.store, self._policy, self._ae, settings.ae_title,
                                     self._client_tls, titles)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bind and serve; raises (with nothing left running) when a port or the TLS setup fails."""
        settings = self._settings
        tls = server_context(settings) if settings.dicom_tls_port is not None else None
        try:
            self._servers.append(self._serve(settings.dicom_port, None, self._sockets[0]))
            if settings.dicom_tls_port is not None:
                self._servers.append(self._serve(settings.dicom_tls_port, tls, self._sockets[1]))
        except OSError:
            self.stop()
            raise
        log.info("DICOM listening on %s:%d as %s%s", settings.dicom_host, self.port, settings.ae_title,
                 f" (TLS on port {self.tls_port})" if self.tls_port is not None else "")

    def wait_ready(self, timeout: float) -> bool:
        """Ready once :meth:`start` returned: the ports are bound by then."""
        return bool(self._servers)

    def stop_accepting(self) -> None:
        """Take no new connection; the associations in progress go on (the start of a clean stop)."""
        if self._draining_since is None:
            self._draining_since = time.monotonic()
        for server in self._servers:
            server.shutdown()

    def stop(self, grace: float = 0.0) -> None:
        """Stop accepting, give the associations in progress up to ``grace`` seconds (counted from
        :meth:`stop_accepting`) to be released by their peers, then abort those left."""
        self.stop_accepting()
        deadline = (self._draining_since or time.monotonic()) + grace
        while self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        left = list(self._ae.active_associations)
        if left:
            log.warning("aborting %d association(s) still open at shutdown", len(left))
        for assoc in left:
            assoc.abort()
        self._servers.clear()
        self._commit.close()

    @property
    def port(self) -> int:
        """The bound plain DICOM port (useful when ``DICOM_PORT`` is 0)."""
        return int(self._servers[0].server_address[1])

    @property
    def tls_port(self) -> int | None:
        return int(self._servers[1].server_address[1]) if len(self._servers) > 1 else None

    @property
    def ae(self) -> AE:
        return self._ae

    # --- setup -------------------------------------------------------------------------------

    @staticmethod
    def _make_ae(settings: Settings) -> AE:
        ae = ArchiveAE(ae_title=settings.ae_title)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.maximum_pdu_size = settings.dicom_max_pdu
        # The association limit is the Intake's (slots held from the A-ASSOCIATE-RQ on); pynetdicom's own
        # check counts every connection's thread, silent ones included, so it must never be the one to fire.
        ae.maximum_associations = _UNLIMITED
        ae.acse_timeout = settings.dicom_acse_timeout
        ae.dimse_timeout = settings.dicom_dimse_timeout
        ae.network_timeout = settings.dicom_network_timeout
        ae.connection_timeout = settings.dicom_acse_timeout
        # With partitions, the Called AE Title picks one of several: checked in _on_requested instead.
        ae.require_called_aet = settings.dicom_check_called_aet and not settings.partitions
        ae.spill_dir = settings.spool_dir
        ae.spill_dir.mkdir(parents=True, exist_ok=True)
        return ae

    def _serve(self, port: int, ssl_context: ssl.SSLContext | None, sock: socket.socket | None) -> DicomServer:
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._wrap(self._on_store)),
            (evt.EVT_C_FIND, self._wrap(self._on_find)),
            (evt.EVT_C_MOVE, self._wrap(self._move.handle)),
            (evt.EVT_C_GET, self._wrap(self._get.handle)),
            (evt.EVT_N_ACTION, self._wrap(self._commit.handle)),
            (evt.EVT_N_CREATE, self._wrap(self._mpps.create)),
            (evt.EVT_N_SET, self._wrap(self._mpps.set)),
        ]
        server = self._ae.make_server((self._settings.dicom_host, port), ae_title=self._settings.ae_title,
                                      contexts=self._contexts, ssl_context=ssl_context, evt_handlers=handlers,
                                      server_class=DicomServer if sock is None else serving_on(sock),
                                      request_handler=DicomRequestHandler)
        assert isinstance(server, DicomServer)
        # Each association gets its contexts in _on_requested; an empty list here spares pynetdicom a
        # deep copy of every supported context per association (and fails closed).
        server.contexts = []
        server.pdu_limit = max(self._settings.dicom_max_pdu + 6, MIN_PDU_LIMIT)
        server.handshake_timeout = self._settings.dicom_artim_timeout
        server.intake = self._intake
        server.board = self._board
        server.network_timeout = self._settings.dicom_network_timeout
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                  name=f"dicom-accept-{port}", daemon=True)
        thread.start()
        return server

    def _client_tls(self, host: str) -> tuple[ssl.SSLContext, str]:
        """TLS arguments for an association to ``host`` (its name is sent as SNI, not verified)."""
        return client_context(self._settings), host

    # --- events ------------------------------------------------------------------------------

    def _peer(self, assoc: Any) -> Peer:
        with self._lock:
            peer = self._peers.get(assoc)
        if peer is None:
            peer = self._policy.identify(str(assoc.requestor.ae_title), str(assoc.requestor.address),
                                         int(assoc.requestor.port))
            partition = self._partitions.for_called_ae(_called_ae_title(assoc))
            peer = replace(peer, partition=partition.id if partition is not None else DEFAULT_PARTITION)
            with self._lock:
                self._peers[assoc] = peer
        return peer

    def _on_requested(self, event: Any) -> None:
        """Identify the caller and offer only the contexts of the services it may use."""
        assoc = event.assoc
        rq = assoc.requestor.primitive
        peer = self._policy.identify(str(rq.calling_ae_title), str(assoc.requestor.address),
                                     int(assoc.requestor.port))
        partition = self._partitions.for_called_ae(_called_ae_title(assoc))
        if partition is None and self._settings.dicom_check_called_aet and self._settings.partitions:
            log.warning("association from %s rejected: called AE title %r is none of this archive's", peer,
                        _called_ae_title(assoc))
            metrics.ASSOCIATIONS.labels("rejected").inc()
            _reject(assoc, 0x01, 0x01, 0x07)  # rejected-permanent, service-user, called AE title not recognised
            return
        peer = replace(peer, partition=partition.id if partition is not None else DEFAULT_PARTITION)
        with self._lock:
            self._peers[assoc] = peer
        if not peer.allowed:
            log.warning("association from %s rejected: the calling AE is not allowed any service", peer)
            metrics.ASSOCIATIONS.labels("rejected").inc()
            _reject(assoc, 0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE title not recognised
            return
        if not self._intake.admit(assoc):
            log.warning("association from %s rejected: all %d associations are in use", peer,
                        self._settings.dicom_max_associations)
            metrics.ASSOCIATIONS.labels("rejected").inc()
            _reject(assoc, 0x02, 0x03, 0x02)  # rejected-transient, service-provider (presentation), local limit
            return
        with self._lock:
            self._ids[assoc] = f"a{next(self._numbers)}"
        metrics.ASSOCIATIONS.labels("admitted").inc()
        metrics.ASSOCIATIONS_ACTIVE.inc()
        assoc.acceptor.supported_contexts = contexts_for(
            peer, rq.presentation_context_definition_list,
            accept_unknown=self._settings.dicom_accept_unknown_sop_classes)
        log.debug("association requested by %s (allowed: %s)", peer, ", ".join(sorted(peer.allowed)))

    def _on_closed(self, event: Any) -> None:
        self._intake.release(event.assoc)
        discard_partial_dataset(event.assoc)
        with self._lock:
            peer = self._peers.pop(event.assoc, None)
            admitted = self._ids.pop(event.assoc, None)
        if admitted is not None:
            metrics.ASSOCIATIONS_ACTIVE.dec()
        if peer is not None:
            self._store.association_closed(event.assoc, peer)

    def _on_echo(self, event: Any) -> int:
        peer = self._peer(event.assoc)
        if not peer.may("echo"):
            return status.NOT_AUTHORIZED
        return status.SUCCESS

    def _on_find(self, event: Any, peer: Peer) -> Any:
        """Study queries and the modality worklist share C-FIND; the presentation context tells them apart."""
        if str(event.context.abstract_syntax) == MODALITY_WORKLIST_FIND:
            return self._worklist.handle(event, peer)
        return self._find.handle(event, peer)

    def _on_store(self, event: Any, peer: Peer) -> Any:
        started = time.perf_counter()
        result = self._store.handle(event, peer)
        code = result if isinstance(result, int) else int(getattr(result, "Status", status.PROCESSING_FAILURE))
        metrics.observe_store_request("c-store", f"0x{code:04X}", time.perf_counter() - started)
        return result

    def _wrap(self, handler: Callable[[Any, Peer], Any]) -> Callable[[Any], Any]:
        def bound(event: Any) -> Any:
            with logs.bound(association=self._ids.get(event.assoc, "-")):
                return handler(event, self._peer(event.assoc))

        bound.__name__ = getattr(handler, "__qualname__", "handler")
        return bound


def _called_ae_title(assoc: Any) -> str:
    """The Called AE Title of ``assoc``'s A-ASSOCIATE-RQ: which partition the caller addresses."""
    primitive = assoc.requestor.primitive
    title = primitive.called_ae_title if primitive is not None else assoc.acceptor.ae_title
    return str(title or "").strip()


def _reject(assoc: Any, result: int, source: int, reason: int) -> None:
    """Answer an A-ASSOCIATE-RQ with A-ASSOCIATE-RJ (PS3.8 9.3.4) from ``EVT_REQUESTED`` and end the association."""
    assoc.acse.send_reject(result, source, reason)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()
