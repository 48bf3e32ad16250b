"""DIMSE status codes the archive answers with, and the one mapping from ingest outcomes to them.

Codes are from PS3.4 B.2.3 (Storage), C.4 (Query/Retrieve), J.3 (Storage Commitment) and the
general statuses of PS3.7 C. ``docs/conformance.md`` lists each with its cause.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from pacs.ingest import IngestResult, Outcome

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: optional keys not supported (unused: every key is answered)
CANCEL = 0xFE00

# General (PS3.7 C)
NOT_AUTHORIZED = 0x0124
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
NO_SUCH_ACTION_TYPE = 0x0123
INVALID_ARGUMENT = 0x0115
MISSING_ATTRIBUTE = 0x0120
RESOURCE_LIMITATION = 0x0213

# Storage (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
ELEMENTS_DISCARDED = 0xB006  # the received duplicate was discarded; the stored version was kept

# Query/Retrieve (PS3.4 C.4)
FIND_OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_OUT_OF_RESOURCES_MATCHES = 0xA701  # unable to calculate number of matches
MOVE_DESTINATION_UNKNOWN = 0xA801

_STORE_STATUS: dict[Outcome, int] = {
    Outcome.STORED: SUCCESS,
    Outcome.REPLACED: SUCCESS,
    Outcome.DUPLICATE: SUCCESS,
    Outcome.KEPT_EXISTING: ELEMENTS_DISCARDED,
    Outcome.INVALID: DATASET_DOES_NOT_MATCH,
    Outcome.NOT_DICOM: CANNOT_UNDERSTAND,
    Outcome.UNAVAILABLE: OUT_OF_RESOURCES,
}

_MAX_COMMENT = 64  # ErrorComment is LO (PS3.7 C.4)


def store_status(result: IngestResult) -> int:
    """The C-STORE status for one ingest result: the only place outcomes become DIMSE statuses."""
    return _STORE_STATUS[result.outcome]


def status_dataset(status: int, comment: str = "") -> Dataset:
    """A status with an optional Error Comment (trimmed to the 64 characters LO allows, ASCII only)."""
    ds = Dataset()
    ds.Status = status
    if comment:
        text = comment.encode("ascii", "replace").decode("ascii").replace("\\", "/")
        ds.ErrorComment = text if len(text) <= _MAX_COMMENT else text[: _MAX_COMMENT - 3] + "..."
    return ds


def store_response(result: IngestResult) -> Dataset | int:
    """The C-STORE response status, with the reason as Error Comment unless it is a plain success
    (then the bare status: pynetdicom needs no Dataset built for it, one per received instance)."""
    status = store_status(result)
    if result.outcome in (Outcome.STORED, Outcome.DUPLICATE, Outcome.REPLACED):
        return status
    return status_dataset(status, result.reason)
