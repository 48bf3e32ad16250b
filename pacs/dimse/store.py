"""C-STORE SCP (PS3.4 B.2): the dataset as received goes through the one ingest path.

The listener's associations receive each dataset into a
:class:`~pacs.dimse.overrides.provider.SpillingBuffer` (in memory, or in a temp file as its fragments arrive
once it is large), so a large object is never held whole in memory. The archive stores its own
File Meta Information (its Implementation Class UID, the sender as Source AE Title) followed by the
received dataset bytes, untouched: pixel data is never decoded here.
"""

from __future__ import annotations

import logging
import struct
import threading
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from pacs import __version__
from pacs.accounts.audit import Action, AuditEvent, record
from pacs.accounts.audit import Outcome as AuditOutcome
from pacs.dicomfile import file_meta_bytes
from pacs.dimse import status
from pacs.dimse.overrides.provider import SpillingBuffer
from pacs.dimse.security import Peer
from pacs.ingest import IngestResult, IngestService, Outcome, Part10Source
from pacs.partitions import PartitionDirectory

log = logging.getLogger(__name__)

#: The archive's Implementation Class UID (PS3.7 D.3.3.2), derived once from "cloudfilm implementation".
IMPLEMENTATION_CLASS_UID = UID("2.25.1291012722190521670963785586830670458")
IMPLEMENTATION_VERSION_NAME = f"CLOUDFILM_{__version__}"[:16]


def spooled_dataset_offset(path: Path) -> int:
    """Where the dataset starts in a spool file: after preamble, ``DICM`` and the meta group (PS3.10 7.1)."""
    with open(path, "rb") as fh:
        head = fh.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("the spool file does not start with File Meta Information")
    (group_length,) = struct.unpack("<I", head[140:144])
    return 144 + group_length


def archive_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_aet: str) -> bytes:
    """Preamble, ``DICM`` and the archive's File Meta Information for a received dataset (PS3.10 7.1)."""
    return file_meta_bytes(sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                           transfer_syntax_uid=transfer_syntax, implementation_class_uid=IMPLEMENTATION_CLASS_UID,
                           implementation_version_name=IMPLEMENTATION_VERSION_NAME, source_ae_title=calling_aet)


def spooled_source(meta: bytes, spool: Path, label: str) -> Part10Source:
    """``meta`` followed by the dataset bytes of a pynetdicom spool file, as one Part 10 source."""
    return Part10Source.from_prefixed_file(meta, spool, label, offset=spooled_dataset_offset(spool))


class StoreSCP:
    """Handles ``EVT_C_STORE``: one call per received instance, on the association's thread.

    What each association stored is tallied per study and written to the audit trail once, when
    the association closes (one event per study, not per instance).
    """

    def __init__(self, ingest: IngestService, partitions: PartitionDirectory | None = None) -> None:
        self._ingest = ingest
        self._partitions = partitions or PartitionDirectory.single("")
        self._tally: dict[int, dict[str, list[int]]] = {}  # id(assoc) -> study UID -> [stored, refused]
        self._lock = threading.Lock()

    def association_closed(self, assoc: Any, peer: Peer) -> None:
        """Record what ``assoc`` stored: one C-STORE audit event per study."""
        with self._lock:
            studies = self._tally.pop(id(assoc), {})
        for study_uid, (stored, refused) in sorted(studies.items()):
            detail = f"{stored} instances stored" + (f", {refused} refused" if refused else "")
            record(self._ingest.engine, AuditEvent(
                Action.C_STORE, AuditOutcome.SUCCESS if stored else AuditOutcome.FAILURE,
                username=peer.calling_aet, source=f"{peer.calling_aet}@{peer.address}", study_uid=study_uid,
                detail=detail))

    def _count(self, assoc: Any, study_uid: str | None, ok: bool) -> None:
        with self._lock:
            counts = self._tally.setdefault(id(assoc), {}).setdefault(study_uid or "", [0, 0])
            counts[0 if ok else 1] += 1

    def handle(self, event: Any, peer: Peer) -> Dataset | int:
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        if not peer.may("store"):
            log.warning("C-STORE of %s refused: %s may not store", sop_uid, peer)
            return status.status_dataset(status.NOT_AUTHORIZED, f"{peer.calling_aet} may not store here")
        label = f"C-STORE {sop_uid} from {peer}"
        received = request.DataSet
        try:
            meta = archive_meta(str(request.AffectedSOPClassUID or ""), sop_uid, str(event.context.transfer_syntax),
                                peer.calling_aet)
            if isinstance(received, SpillingBuffer) and received.path is not None:
                received.finish()
                source = Part10Source.from_prefixed_file(meta, received.path, label)
            elif event.dataset_path is not None:  # pynetdicom's own spool (STORE_RECV_CHUNKED_DATASET)
                source = spooled_source(meta, Path(event.dataset_path), label)
            else:
                source = Part10Source.from_bytes(meta + received.getvalue(), label)
        except (OSError, ValueError) as exc:
            log.error("cannot read the received C-STORE dataset of %s from %s: %s", sop_uid, peer, exc)
            if isinstance(received, SpillingBuffer):
                received.discard()
            result = IngestResult(Outcome.UNAVAILABLE, "the received data could not be spooled")
            return status.store_response(result)
        try:
            partition = self._partitions.by_id(peer.partition) or self._partitions.default
            result = self._ingest.store_source(source, partition)
        finally:
            if isinstance(received, SpillingBuffer):
                received.discard()
        self._count(event.assoc, result.study_instance_uid, result.ok)
        if result.ok and result.sop_instance_uid != sop_uid:
            log.warning("C-STORE from %s: Affected SOP Instance UID %s differs from the dataset's %s",
                        peer, sop_uid, result.sop_instance_uid)
        if not result.ok or result.warning:
            log.info("C-STORE %s from %s: %s (%s)", sop_uid, peer, result.outcome.value, result.reason)
        return status.store_response(result)
