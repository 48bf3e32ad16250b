"""Presentation contexts: the SOP classes and transfer syntaxes the listener accepts (PS3.2 lists them).

Storage accepts every transfer syntax pynetdicom knows but two (:data:`NOT_OFFERED`): the dataset
is stored as received and pixel data is never decoded on receipt, so no codec limits what can be
stored. Per association
only the services the calling AE may use are offered, and each context is accepted with the first
transfer syntax *the requestor* listed that the archive supports, so data arrives as the sender
prefers to send it; the order below only breaks ties.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context

from pacs.dimse.security import Peer
from pacs.settings import DimseService

VERIFICATION = UID("1.2.840.10008.1.1")
STORAGE_COMMITMENT_PUSH = UID("1.2.840.10008.1.20.1")
PATIENT_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
PATIENT_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.1.2")
PATIENT_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.1.3")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")

FIND_MODELS = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
MOVE_MODELS = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE)
GET_MODELS = (PATIENT_ROOT_GET, STUDY_ROOT_GET)
PATIENT_ROOT_MODELS = frozenset({PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET})
STORAGE_CLASSES: tuple[UID, ...] = tuple(UID(str(cx.abstract_syntax)) for cx in AllStoragePresentationContexts)

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
    **{uid: "find" for uid in FIND_MODELS},
    **{uid: "move" for uid in MOVE_MODELS},
    **{uid: "get" for uid in GET_MODELS},
    **{uid: "store" for uid in STORAGE_CLASSES},
}


def supported_contexts() -> list[PresentationContext]:
    """Every presentation context the archive can accept (before per-peer filtering)."""
    contexts = [build_context(uid, NON_STORAGE_SYNTAXES)
                for uid in (VERIFICATION, *FIND_MODELS, *MOVE_MODELS, *GET_MODELS, STORAGE_COMMITMENT_PUSH)]
    for uid in STORAGE_CLASSES:
        storage = build_context(uid, STORAGE_SYNTAXES)
        storage.scu_role = True  # C-GET sends C-STOREs back when the requestor asks for the SCP role
        storage.scp_role = True
        contexts.append(storage)
    return contexts


def contexts_for(peer: Peer, proposed: Sequence[PresentationContext]) -> list[PresentationContext]:
    """What to accept from ``peer``: its proposed abstract syntaxes of the services it may use, each with
    the proposed transfer syntaxes the archive supports, in the requestor's order of preference.

    Built fresh and small per association (only what was proposed): much cheaper than pynetdicom's
    copy of all 177 supported contexts with 43 transfer syntaxes each.
    """
    preferred: dict[str, list[str]] = {}
    for cx in proposed:
        order = preferred.setdefault(str(cx.abstract_syntax), [])
        order.extend(str(ts) for ts in cx.transfer_syntax if str(ts) not in order)
    out: list[PresentationContext] = []
    for uid, order in preferred.items():
        service = SERVICE_OF.get(uid)
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
