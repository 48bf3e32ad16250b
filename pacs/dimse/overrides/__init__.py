"""Every place the archive replaces pynetdicom internals, or relies on how they work, and why.

Public pynetdicom API is used everywhere else in :mod:`pacs.dimse`. What pynetdicom does not let
an application change lives here, one module per concern:

- :mod:`.reactor`: both per-association loops block on their sockets and queues instead of
  polling every 1 ms (2.7 ms per C-STORE, 59 % of a core for 8 idle associations), and the
  association reactor never reads the DIMSE queue while a ``send_*`` waits for its response
  (pynetdicom's checkpoint race lost C-MOVE sub-operations under load); a DUL wait ends when the
  connection is gone.
- :mod:`.transport`: the TLS handshake in the connection's own thread, PDU length and type checks
  before reading, one-buffer PDU reads, immediate ACKs and TCP_NODELAY (40 ms delayed-ACK stalls),
  no ``gc.collect()`` every 60 polls, and the :class:`~pacs.dimse.intake.Intake` deciding which
  connections are kept (ARTIM window, per-address limit).
- :mod:`.provider` and :mod:`.responses`: a received dataset stays in memory up to 8 MiB and
  spills to a temp file beyond (pynetdicom holds every one whole, or spools every one); C-STORE
  responses encoded directly instead of through a pydicom Dataset.
- :mod:`.requestor`: the associations the archive requests (C-MOVE sub-operations, storage
  commitment reports) get the same reactors and transport, and the C-MOVE requester as Move
  Originator (PS3.4 C.4.2.2).

pynetdicom is pinned to the minor release these were written against (:data:`PINNED`, as in
``pyproject.toml``). :data:`UPSTREAM` holds the SHA-256 of the source of each pynetdicom function
the overrides replace or depend on; ``tests/pacs/dimse/test_overrides.py`` fails when one differs
from the installed pynetdicom, or when an override of a pynetdicom method is not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The pynetdicom requirement of ``pyproject.toml``: the release the overrides were written against.
PINNED = "pynetdicom>=3.0.4,<3.1"


@dataclass(frozen=True)
class Upstream:
    """A pynetdicom function the overrides replace or rely on, as it was when they were written."""

    name: str  # dotted path, e.g. "pynetdicom.dul.DULServiceProvider.run_reactor"
    sha256: str  # of inspect.getsource()
    recheck: str  # what to re-check (and then re-hash) when it changed


UPSTREAM: tuple[Upstream, ...] = (
    Upstream("pynetdicom.transport.AssociationServer.server_bind",
             "cf69278a05a5c777b7e9e9af0769e3102618027b2ec8035a30af8cc370ebdae6",
             "transport's server_bind takes the supervisor's inherited listening socket instead of binding one "
             "(and makes it non-blocking): re-check what the upstream bind sets up besides the socket"),
    Upstream("pynetdicom.dul.DULServiceProvider.__init__",
             "c82dafa9438ddf70685917cb15d2bfbc814aa0ad5233ffb0ae650faedc7570f0",
             "reactor.make_event_driven replaces the to_provider_queue, event_queue and to_user_queue it creates "
             "and relies on the thread target being run_reactor"),
    Upstream("pynetdicom.dul.DULServiceProvider.run_reactor",
             "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803",
             "reactor.EventDrivenDUL._run_event_driven is this loop with the sleep replaced: port any change"),
    Upstream("pynetdicom.dul.DULServiceProvider.kill_dul",
             "5ceccf8dd01c2072c377d18bb1be284941a345bd40f03bd1e03a864ab0817842",
             "reactor.EventDrivenDUL.kill_dul also wakes the select: port any change"),
    Upstream("pynetdicom.dul.DULServiceProvider.stop_dul",
             "28a7e0be126e7b306369cc1b131daec8e907d21d0f5692930133b6599b8c6e5f",
             "reactor.EventDrivenDUL.stop_dul also wakes the select: port any change"),
    Upstream("pynetdicom.dul.DULServiceProvider.receive_pdu",
             "fa67339834ca998cb31eb1806a854864200464b0a9991333d387aa419478c4e6",
             "reactor.EventDrivenDUL.receive_pdu calls it in MAX_IDLE slices and stops when the DUL has stopped"),
    Upstream("pynetdicom.dul.DULServiceProvider._read_pdu_data",
             "19f2d4e38c13c83586365d93dd5cd96a0c7c665cb37251054b3e1f246e9f431b",
             "transport.GuardedSocket.recv expects recv(6) for the PDU header then recv(length) for its body, "
             "strictly alternating"),
    Upstream("pynetdicom.association.Association._run_reactor",
             "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee",
             "reactor.EventDrivenAssociation._run_reactor/_serve_next are this loop with the sleep replaced and "
             "the checkpoint looked at again after _is_paused = False: port any change"),
    Upstream("pynetdicom.association.Association.run_reactor",
             "ed8bbbe3b3d6ddaee3e8673ba25b2ab2a4c45f25bc1d8ae7b48ebafd09499e6d",
             "the acceptor waits for the A-ASSOCIATE-RQ with dul.receive_pdu(wait=True), fires EVT_REQUESTED "
             "before negotiating (the listener picks contexts, admits or rejects there) and calls _run_reactor"),
    Upstream("pynetdicom.association.Association._serve_request",
             "2f24c1759cdf6c8c433094f2a8dd8144f76f5547f03daed7b94e0f78bc12f877",
             "it sets _is_paused around the SCP handler (C-GET sends its C-STOREs from the reactor thread)"),
    Upstream("pynetdicom.association.Association.send_c_store",
             "fa5a8127f349f8e75698f4cdf2b4dbe3f38e3e9e320a8cf45c15bf8333f9c283",
             "the reactor's checkpoint re-check assumes every send clears _reactor_checkpoint before it reads "
             "_is_paused; requestor.RequestedAssociation.send_c_store wraps its signature"),
    Upstream("pynetdicom.association.Association.send_n_event_report",
             "e3d427e77369680ce01345a9bd2fef45811063965e4661f9b46e62c03ff303ba",
             "the commitment report is sent from a worker thread: same checkpoint handshake as send_c_store"),
    Upstream("pynetdicom.association.Association.release",
             "c7d713502b77d70284320ac20245444b78f49a9d37b6a351d38e18344edaae43",
             "same checkpoint handshake as send_c_store"),
    Upstream("pynetdicom.dimse.DIMSEServiceProvider.__init__",
             "bbecd186810e77006d189aff29c42e76d226cd6b34cbb12066c56300a8280ef4",
             "reactor.make_event_driven replaces its msg_queue"),
    Upstream("pynetdicom.dimse.DIMSEServiceProvider.receive_primitive",
             "5f99c86b14a15cefa87d914cda3591ec4d636d4c53a982e945ec9c1828c6e43f",
             "provider.ArchiveDIMSE.receive_primitive gives each new message a SpillingBuffer as its data_set"),
    Upstream("pynetdicom.dimse.DIMSEServiceProvider.send_msg",
             "a839cf2fb46976d9da29cf06fea41c04416b38d14fab612af12e5d869bd5b3f0",
             "provider.ArchiveDIMSE.send_msg sends C-STORE responses as the one P-DATA this would build"),
    Upstream("pynetdicom.dimse_messages.DIMSEMessage.decode_msg",
             "f51c777e841a76beeaadfe3015bd4f4a68387229a72f13f3a3b7846d01d72284",
             "it writes each dataset fragment to data_set (the SpillingBuffer) as it arrives"),
    Upstream("pynetdicom.transport.AssociationSocket.recv",
             "6bc20a33b1b7cfe76d4ad4407ca242563bc6206fde4b4e1cf7a2fbb1f11d621d",
             "transport.PromptSocket/GuardedSocket.recv replace it: a short read still means a closed connection"),
    Upstream("pynetdicom.transport.RequestHandler.handle",
             "034823fb4df3a87467bd0d45193f0d457fcf59c87fda8e97b2edfb89426f76dd",
             "transport.DicomRequestHandler.handle does the TLS handshake first, then calls it"),
    Upstream("pynetdicom.transport.RequestHandler._create_association",
             "05c8d12b79863cdbdb901ce37187b7030a0434c5cd89d219ed0bedbda679a61e",
             "transport.DicomRequestHandler._create_association converts its result before its threads start"),
    Upstream("pynetdicom.transport.AssociationServer.get_request",
             "925a4f3a3042f6e4b944505d06dc19c41e10ff7dec5385c794d62d31fd000300",
             "transport.DicomServer.get_request wraps TLS without handshaking in the accept loop"),
    Upstream("pynetdicom.transport.AssociationServer.service_actions",
             "0a0853a3615ac7c5260a57dcdc8b0e9908d655919b7d64737c89534869758873",
             "transport.DicomServer.service_actions replaces its gc.collect() with the ARTIM check"),
    Upstream("pynetdicom.transport.AssociationServer.shutdown",
             "e8e2c3a41009886d8544d17ce01118a81bac81b612a1d17f30fc200971f41db9",
             "transport.DicomServer.shutdown leaves the AE's server list alone"),
    Upstream("pynetdicom.transport.ThreadedAssociationServer.process_request_thread",
             "9e76e9b9c8a3d8b18bb1df7ac652c86f21b4aaaf39e10deca9312f91a7c21a8a",
             "a connection's socket is closed by its association, not here (intake counts open sockets)"),
    Upstream("pynetdicom.ae.ApplicationEntity.associate",
             "dbc8cf47090386b2068817f6e65e39ca2c0d5b8fd80f6b9b7a322d37b85b2985",
             "it must call _create_socket before request() and start(): requestor.ArchiveAE converts the "
             "association there"),
    Upstream("pynetdicom.ae.ApplicationEntity._create_socket",
             "f56bca8888e1ce9f3d64f30608db5d89f003b0b1b31106d3178a550871a4030f",
             "requestor.ArchiveAE._create_socket wraps it"),
    Upstream("pynetdicom.service_class.QueryRetrieveServiceClass._move_scp",
             "5c14d1be3d737befcc148893bcd529a03695e82f8f943f19b640ff4f32382742",
             "it passes the C-MOVE handler's keyword arguments (move_originator) to ae.associate and sends the "
             "sub-operations with send_c_store from another thread than the sub-association's reactor"),
)
