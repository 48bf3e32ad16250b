"""Presentation contexts: the SOP classes and transfer syntaxes the listener accepts (PS3.2 lists them).

Storage accepts every transfer syntax pynetdicom knows but two (:data:`NOT_OFFERED`): the dataset
is stored as received and pixel data is never decoded on receipt, so no codec limits what can be
stored. The storage SOP classes are pynetdicom's and those it does not list (:data:`EXTRA_STORAGE_CLASSES`:
the retired ones old modalities still send, DICOS, DICONDE); with ``[dicom]
accept_unknown_sop_classes`` any private or unknown abstract syntax a peer proposes is taken as
storage too. Per association only the services the calling AE may use are offered, and each
context is accepted with the first transfer syntax *the requestor* listed that the archive
supports, so data arrives as the sender prefers to send it; the order below only breaks ties.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UID_dictionary,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, register_uid
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from pacs.dimse.security import Peer
from pacs.settings import DimseService
from pacs.uids import is_valid_uid

log = logging.getLogger(__name__)

VERIFICATION = UID("1.2.840.10008.1.1")
STORAGE_COMMITMENT_PUSH = UID("1.2.840.10008.1.20.1")
PATIENT_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
PATIENT_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.1.2")
PATIENT_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.1.3")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
MODALITY_WORKLIST_FIND = UID("1.2.840.10008.5.1.4.31")
MODALITY_PERFORMED_PROCEDURE_STEP = UID("1.2.840.10008.3.1.2.3.3")

FIND_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
MOVE_MODELS = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE)
GET_MODELS = (PATIENT_ROOT_GET, STUDY_ROOT_GET)
PATIENT_ROOT_MODELS = frozenset({PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET})
#: "... Storage" SOP classes of PS3.6 that are not stored by the Storage Service Class: the media
#: storage directory (DICOMDIR, never sent over a network) and Storage Commitment.
_NOT_STORAGE = frozenset({"1.2.840.10008.1.3.10", "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.2"})


def _register_unlisted_storage_classes() -> tuple[UID, ...]:
    """The storage SOP classes in pydicom's UID dictionary (PS3.6 Annex A) that pynetdicom maps to no
    service at all, registered with its Storage service (its documented way, ``register_uid``) so that
    their C-STOREs reach the archive's handler: the retired ones (Ultrasound Image Storage (Retired),
    NM Image Storage (Retired), X-Ray Angiographic Bi-Plane...), the trial SRs, DICOS and DICONDE
    eddy current. Not the Non-Patient Object Storage classes (Hanging Protocol, Color Palette, implant
    templates...): they are filed under no patient or study, which the archive needs."""
    found = tuple(UID(uid) for uid, (name, kind, *_rest) in sorted(UID_dictionary.items())
                  if kind == "SOP Class" and "Storage" in name and uid not in _NOT_STORAGE
                  and uid_to_service_class(uid) is ServiceClass)
    for uid in found:
        register_uid(uid, UID_dictionary[uid][4], StorageServiceClass)
    return found


#: Storage SOP classes pynetdicom does not list (see :func:`_register_unlisted_storage_classes`).
EXTRA_STORAGE_CLASSES: tuple[UID, ...] = _register_unlisted_storage_classes()
STORAGE_CLASSES: tuple[UID, ...] = (*(UID(str(cx.abstract_syntax)) for cx in AllStoragePresentationContexts),
                                    *EXTRA_STORAGE_CLASSES)

#: Most private or unknown SOP classes registered with pynetdicom (``accept_unknown_sop_classes``):
#: the registry is process-wide and peers choose the UIDs, so it is bounded.
MAX_UNKNOWN_CLASSES = 1000
_unknown_classes: set[str] = set()
_unknown_lock = threading.Lock()

UNCOMPRESSED: tuple[UID, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                                 ExplicitVRBigEndian)

#: Query/retrieve, verification and commitment: the identifiers are small, uncompressed datasets.
NON_STORAGE_SYNTAXES: list[str] = [str(ts) for ts in UNCOMPRESSED]

#: JPIP Referenced Deflate and JPIP HTJ2K Referenced Deflate deflate the whole dataset in a way
#: pydicom does not inflate, so the header could not be indexed: not offered (peers fall back).
NOT_OFFERED: frozenset[str] = frozenset({"1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"})

#: Storage: uncompressed first, then every compressed syntax (lossless, lossy, video, JPIP...).
STORAGE_SYNTAXES: list[str] = [*NON_STORAGE_SYNTAXES,
                               *(str(ts) for ts in ALL_TRANSFER_SYNTAXES
                                 if UID(ts) not in UNCOMPRESSED and str(ts) not in NOT_OFFERED)]

_STORAGE_SET = frozenset(STORAGE_SYNTAXES)
_NON_STORAGE_SET = frozenset(NON_STORAGE_SYNTAXES)

SERVICE_OF: dict[str, DimseService] = {
    VERIFICATION: "echo",
    STORAGE_COMMITMENT_PUSH: "commit",
    MODALITY_WORKLIST_FIND: "find",
    MODALITY_PERFORMED_PROCEDURE_STEP: "mpps",
    **{uid: "find" for uid in FIND_MODELS},
    **{uid: "move" for uid in MOVE_MODELS},
    **{uid: "get" for uid in GET_MODELS},
    **{uid: "store" for uid in STORAGE_CLASSES},
}


def supported_contexts() -> list[PresentationContext]:
    """Every presentation context the archive can accept (before per-peer filtering)."""
    contexts = [build_context(uid, NON_STORAGE_SYNTAXES)
                for uid in (VERIFICATION, *FIND_MODELS, *MOVE_MODELS, *GET_MODELS, STORAGE_COMMITMENT_PUSH,
                            MODALITY_WORKLIST_FIND, MODALITY_PERFORMED_PROCEDURE_STEP)]
    for uid in STORAGE_CLASSES:
        storage = build_context(uid, STORAGE_SYNTAXES)
        storage.scu_role = True  # C-GET sends C-STOREs back when the requestor asks for the SCP role
        storage.scp_role = True
        contexts.append(storage)
    return contexts


def contexts_for(peer: Peer, proposed: Sequence[PresentationContext], *,
                 accept_unknown: bool = False) -> list[PresentationContext]:
    """What to accept from ``peer``: its proposed abstract syntaxes of the services it may use, each with
    the proposed transfer syntaxes the archive supports, in the requestor's order of preference.
    With ``accept_unknown``, an abstract syntax unknown to DICOM (a private SOP class) is storage.

    Built fresh and small per association (only what was proposed): much cheaper than pynetdicom's
    copy of all supported contexts with 43 transfer syntaxes each.
    """
    preferred: dict[str, list[str]] = {}
    for cx in proposed:
        order = preferred.setdefault(str(cx.abstract_syntax), [])
        order.extend(str(ts) for ts in cx.transfer_syntax if str(ts) not in order)
    out: list[PresentationContext] = []
    for uid, order in preferred.items():
        service = SERVICE_OF.get(uid)
        if service is None and accept_unknown and _unknown_storage_class(uid):
            service = "store"
        if service is None or not peer.may(service):
            continue
        ours = _STORAGE_SET if service == "store" else _NON_STORAGE_SET
        ordered = [ts for ts in order if ts in ours]
        if not ordered:
            continue
        mine = build_context(uid, ordered)
        if service == "store":
            mine.scu_role = mine.scp_role = True  # as in supported_contexts(): C-GET's role selection
        out.append(mine)
    return out


def _unknown_storage_class(uid: str) -> bool:
    """True when ``uid`` is a valid UID that DICOM does not define (a private SOP class, say), now
    registered with pynetdicom's Storage service; False for anything else or past the bound."""
    if uid in UID_dictionary or not is_valid_uid(uid, strict=True):
        return False
    with _unknown_lock:
        if uid in _unknown_classes:
            return True
        if len(_unknown_classes) >= MAX_UNKNOWN_CLASSES:
            log.warning("not accepting SOP class %s: %d unknown SOP classes are registered already", uid,
                        MAX_UNKNOWN_CLASSES)
            return False
        register_uid(uid, "Unknown_" + uid.replace(".", "_"), StorageServiceClass)
        _unknown_classes.add(uid)
        return True
