"""The associations the archive requests: C-MOVE sub-operations, storage commitment reports and any
later sender (routing) go through :class:`ArchiveAE`, the listener's AE.

Each one gets, before its threads start (in :meth:`ArchiveAE._create_socket`, which pynetdicom calls
before it sends the A-ASSOCIATE-RQ):

- the event-driven reactors of :mod:`pacs.dimse.overrides.reactor`, whose association reactor never
  reads the DIMSE queue while ``send_c_store`` (or ``send_n_event_report``) waits there for its
  response: pynetdicom's own lost C-MOVE sub-operations under load;
- a :class:`~pacs.dimse.overrides.transport.PromptSocket` with TCP_NODELAY (no 40 ms delayed-ACK
  stall per message);
- for C-MOVE sub-operations, the C-MOVE requester's AE title as Move Originator Application Entity
  Title (PS3.4 C.4.2.2, PS3.7 9.1.1.1); pynetdicom's C-MOVE SCP sends its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

from pacs.dimse.overrides.reactor import EventDrivenAssociation, make_event_driven
from pacs.dimse.overrides.transport import PromptSocket, send_without_delay


class RequestedAssociation(EventDrivenAssociation):
    """An association the archive requested; its C-STOREs name :attr:`move_originator` when set."""

    move_originator: str | None = None

    def send_c_store(self, dataset: Any, msg_id: int = 1, priority: int = 2, originator_aet: str | None = None,
                     originator_id: int | None = None) -> Dataset:
        if self.move_originator is not None:
            originator_aet = self.move_originator
        return super().send_c_store(dataset, msg_id, priority, originator_aet, originator_id)


class ArchiveAE(AE):
    """The listener's AE: every association it requests is a :class:`RequestedAssociation`.

    ``associate(..., move_originator=AET)`` is how :class:`pacs.dimse.retrieve.MoveSCP` names the
    C-MOVE's requester (pynetdicom passes the C-MOVE handler's keyword arguments through).
    """

    spill_dir: Path | None = None  # where received C-STORE datasets too large for memory are written

    def associate(self, *args: Any, move_originator: str | None = None, **kwargs: Any) -> Association:
        assoc = super().associate(*args, **kwargs)
        if move_originator and isinstance(assoc, RequestedAssociation):
            assoc.move_originator = move_originator  # set before the caller sends anything
        return assoc

    def _create_socket(self, assoc: Association, address: AddressInformation,
                       tls_args: Any) -> AssociationSocket:  # pynetdicom.ae.ApplicationEntity._create_socket
        sock = super()._create_socket(assoc, address, tls_args)
        sock.__class__ = PromptSocket
        send_without_delay(sock.socket)
        make_event_driven(assoc, RequestedAssociation)
        return sock
