"""Storage Commitment Push Model SCP (PS3.4 J.3): N-ACTION in, N-EVENT-REPORT out.

An instance is committed only when it is indexed with the referenced SOP Class and its stored
object still hashes to the SHA-256 recorded at ingest; otherwise it is reported failed: 0x0112 (no
such object instance), 0x0119 (class/instance conflict), 0x0110 (processing failure: the object is
missing or its bytes changed) or 0x0213 (resource limitation: the object store is unavailable, ask
again later). The report goes on the requesting association while it is open, else on a new
association to the requesting AE as configured in ``[dicom.modalities]`` (PS3.4 J.3.3).

The request is answered within the partition its association called (:mod:`pacs.partitions`): only
that partition's instances are checked (another hospital's twin with the same SOP Instance UID is
never committed for it), and the report names, and a new association calls from, that partition's
AE title.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.presentation import build_context, build_role
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.dimse import status
from pacs.dimse.contexts import STORAGE_COMMITMENT_PUSH
from pacs.dimse.security import AccessPolicy, Peer
from pacs.errors import NotFound, StorageUnavailable
from pacs.retrieve import StoredInstance, find_instances_by_sop, open_instance
from pacs.storage import ObjectStore
from pacs.uids import is_valid_uid

log = logging.getLogger(__name__)

#: The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5).
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # N-ACTION Action Type ID
EVENT_ALL_COMMITTED = 1  # N-EVENT-REPORT Event Type ID: every instance committed
EVENT_SOME_FAILED = 2  # at least one instance failed
_CHUNK = 1024 * 1024
#: An SCU that wants the report on a new association releases right after the N-ACTION response;
#: waiting this long before choosing avoids sending into an association that is being released.
RELEASE_GRACE_S = 0.5


@dataclass
class CommitmentResult:
    transaction_uid: str
    committed: list[tuple[str, str]] = field(default_factory=list)  # (SOP Class UID, SOP Instance UID)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # ... + Failure Reason

    @property
    def event_type(self) -> int:
        return EVENT_SOME_FAILED if self.failed else EVENT_ALL_COMMITTED

    def to_dataset(self, ae_title: str) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        ds.RetrieveAETitle = ae_title
        if self.committed:
            ds.ReferencedSOPSequence = [_ref(c, i) for c, i in self.committed]
        if self.failed:
            items = []
            for cls, uid, reason in self.failed:
                item = _ref(cls, uid)
                item.FailureReason = reason
                items.append(item)
            ds.FailedSOPSequence = items
        return ds


def _ref(sop_class: str, sop_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_uid
    return item


def verify(engine: Engine, store: ObjectStore, transaction_uid: str,
           references: Sequence[tuple[str, str]], partition: int = DEFAULT_PARTITION) -> CommitmentResult:
    """Check each referenced instance of ``partition`` against the index and its stored object's SHA-256."""
    result = CommitmentResult(transaction_uid)
    try:
        stored = {i.sop_uid: i for i in find_instances_by_sop(engine, AccessScope.everything(partition),
                                                              [u for _c, u in references])}
    except SQLAlchemyError:
        log.exception("storage commitment %s: the index failed", transaction_uid)
        result.failed = [(c, u, status.RESOURCE_LIMITATION) for c, u in references]
        return result
    for sop_class, sop_uid in references:
        inst = stored.get(sop_uid)
        if inst is None:
            result.failed.append((sop_class, sop_uid, status.NO_SUCH_OBJECT_INSTANCE))
        elif inst.sop_class_uid != sop_class:
            result.failed.append((sop_class, sop_uid, status.CLASS_INSTANCE_CONFLICT))
        else:
            reason = _check_object(store, inst)
            if reason is None:
                result.committed.append((sop_class, sop_uid))
            else:
                result.failed.append((sop_class, sop_uid, reason))
    return result


def _check_object(store: ObjectStore, inst: StoredInstance) -> int | None:
    """None when the stored object hashes to the recorded SHA-256, else the failure reason."""
    digest = hashlib.sha256()
    try:
        with open_instance(store, inst) as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except NotFound:
        log.error("storage commitment: the object of %s is missing from the store", inst.sop_uid)
        return status.PROCESSING_FAILURE
    except (StorageUnavailable, OSError):
        return status.RESOURCE_LIMITATION
    if digest.hexdigest() != inst.sha256:
        log.error("storage commitment: the stored object of %s does not match its SHA-256", inst.sop_uid)
        return status.PROCESSING_FAILURE
    return None


def parse_request(info: Dataset | None) -> tuple[str, list[tuple[str, str]]]:
    """Transaction UID and (class, instance) references of an N-ACTION; ValueError when malformed."""
    if info is None or "TransactionUID" not in info:
        raise ValueError("the request has no Transaction UID")
    transaction_uid = str(info.TransactionUID)
    if not is_valid_uid(transaction_uid):
        raise ValueError("the Transaction UID is not a valid UID")
    refs: list[tuple[str, str]] = []
    for item in info.get("ReferencedSOPSequence", []) or []:
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "")
        sop_uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
        if not sop_class or not sop_uid:
            raise ValueError("a Referenced SOP Sequence item lacks its class or instance UID")
        refs.append((sop_class, sop_uid))
    if not refs:
        raise ValueError("the Referenced SOP Sequence is empty")
    return transaction_uid, refs


class CommitmentSCP:
    """Handles ``EVT_N_ACTION`` and sends the N-EVENT-REPORT from a worker thread."""

    def __init__(self, engine: Engine, store: ObjectStore, policy: AccessPolicy, ae: AE, ae_title: str,
                 tls_args: Callable[[str], tuple[ssl.SSLContext, str]],
                 partition_titles: Mapping[int, str] | None = None) -> None:
        """``partition_titles``: the AE title each partition but the default answers and calls from."""
        self._engine = engine
        self._titles = dict(partition_titles or {})
        self._store = store
        self._policy = policy
        self._ae = ae
        self._ae_title = ae_title
        self._tls_args = tls_args
        self._workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="commitment")

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=False)

    def handle(self, event: Any, peer: Peer) -> tuple[int, Dataset | None]:
        if not peer.may("commit"):
            log.warning("storage commitment refused: %s may not request it", peer)
            return status.NOT_AUTHORIZED, None
        if event.action_type != REQUEST_STORAGE_COMMITMENT:
            return status.NO_SUCH_ACTION_TYPE, None
        try:
            transaction_uid, refs = parse_request(event.action_information)
        except ValueError as exc:
            log.info("storage commitment from %s refused: %s", peer, exc)
            return status.MISSING_ATTRIBUTE, None
        except Exception as exc:  # an action information pydicom cannot decode
            log.info("storage commitment from %s: undecodable request: %s", peer, exc)
            return status.INVALID_ARGUMENT, None
        log.info("storage commitment %s from %s: %d instances", transaction_uid, peer, len(refs))
        self._workers.submit(self._run, event.assoc, peer, transaction_uid, refs, time.monotonic())
        return status.SUCCESS, None

    def _run(self, assoc: Any, peer: Peer, transaction_uid: str, refs: list[tuple[str, str]],
             requested_at: float) -> None:
        try:
            result = verify(self._engine, self._store, transaction_uid, refs, peer.partition)
            title = self._titles.get(peer.partition, self._ae_title)
            report = result.to_dataset(title)
            log.info("storage commitment %s: %d committed, %d failed", transaction_uid,
                     len(result.committed), len(result.failed))
            time.sleep(max(0.0, requested_at + RELEASE_GRACE_S - time.monotonic()))
            if not self._send_on(assoc, report, result.event_type):
                self._send_new(peer, report, result.event_type, title)
        except Exception:  # a worker must never die silently
            log.exception("storage commitment %s failed", transaction_uid)

    def _send_on(self, assoc: Any, report: Dataset, event_type: int) -> bool:
        if not assoc.is_established or isinstance(assoc.dul.peek_next_pdu(), A_RELEASE):
            return False
        try:
            rsp, _reply = assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT_PUSH,
                                                    COMMITMENT_INSTANCE_UID)
        except (RuntimeError, ValueError) as exc:
            log.info("storage commitment report not sent on the open association: %s", exc)
            return False
        return "Status" in rsp

    def _calling_ae(self, title: str) -> AE:
        """The archive's AE, or one calling as a partition's AE title (same timeouts and identity)."""
        if title == self._ae_title:
            return self._ae
        ae = AE(ae_title=title)
        for name in ("implementation_class_uid", "implementation_version_name", "maximum_pdu_size", "acse_timeout",
                     "dimse_timeout", "network_timeout", "connection_timeout"):
            setattr(ae, name, getattr(self._ae, name))
        return ae

    def _send_new(self, peer: Peer, report: Dataset, event_type: int, title: str) -> None:
        remote = peer.modality or self._policy.destination(peer.calling_aet)
        if remote is None:
            log.error("storage commitment report for %s cannot be delivered: %s is not in [dicom.modalities]",
                      report.TransactionUID, peer.calling_aet)
            return
        cx = build_context(STORAGE_COMMITMENT_PUSH)
        role = build_role(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)
        tls = self._tls_args(remote.host) if remote.tls else None
        assoc = self._calling_ae(title).associate(remote.host, remote.port, contexts=[cx], ae_title=remote.aet,
                                                  ext_neg=[role], tls_args=tls)
        if not assoc.is_established:
            log.error("storage commitment report for %s: cannot associate with %s (%s:%d)",
                      report.TransactionUID, remote.aet, remote.host, remote.port)
            return
        try:
            rsp, _reply = assoc.send_n_event_report(report, event_type, STORAGE_COMMITMENT_PUSH,
                                                    COMMITMENT_INSTANCE_UID)
            if "Status" not in rsp or rsp.Status != status.SUCCESS:
                log.warning("storage commitment report for %s: %s answered %s", report.TransactionUID, remote.aet,
                            f"0x{rsp.Status:04X}" if "Status" in rsp else "nothing")
        finally:
            if assoc.is_established:
                assoc.release()
