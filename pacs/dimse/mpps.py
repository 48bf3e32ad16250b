"""Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET recorded on the order.

Thin: the attributes the worklist keeps are read from the request and handed to
:mod:`pacs.worklist.performed`; its typed errors become the statuses of PS3.4 F.7.2 and PS3.7 C.
"""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pacs.dimse import status
from pacs.dimse.security import Peer
from pacs.errors import InvalidDataset, NotFound, StorageUnavailable
from pacs.uids import is_valid_uid
from pacs.worklist.performed import DuplicateStep, StepChange, StepEnded, StepStart, change_step, start_step

log = logging.getLogger(__name__)

DUPLICATE_SOP_INSTANCE = 0x0111
INVALID_ATTRIBUTE_VALUE = 0x0106
MAY_NO_LONGER_BE_UPDATED = 0xA710  # PS3.4 F.7.2.2.2


def _text(ds: Dataset | None, keyword: str) -> str:
    if ds is None or keyword not in ds:
        return ""
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


class PerformedStepSCP:
    """Handles ``EVT_N_CREATE`` and ``EVT_N_SET`` on the MPPS SOP class."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def create(self, event: Any, peer: Peer) -> tuple[int, Dataset | None]:
        if not peer.may("mpps"):
            log.warning("MPPS N-CREATE refused: %s may not report procedure steps", peer)
            return status.NOT_AUTHORIZED, None
        try:
            attributes: Dataset = event.attribute_list
            scheduled = attributes.get("ScheduledStepAttributesSequence") or [None]
            item = scheduled[0]
        except Exception as exc:
            log.info("MPPS N-CREATE from %s: undecodable attribute list: %s", peer, exc)
            return INVALID_ATTRIBUTE_VALUE, None
        requested = event.request.AffectedSOPInstanceUID
        sop_uid = str(requested) if requested else generate_uid()
        if not is_valid_uid(sop_uid):
            return INVALID_ATTRIBUTE_VALUE, None
        start = StepStart(
            sop_uid=sop_uid, status=_text(attributes, "PerformedProcedureStepStatus"),
            accession_number=_text(item, "AccessionNumber"), study_uid=_text(item, "StudyInstanceUID"),
            step_id=_text(attributes, "PerformedProcedureStepID"),
            station_aet=_text(attributes, "PerformedStationAETitle"), modality=_text(attributes, "Modality"),
            calling_aet=peer.calling_aet, start_date=_text(attributes, "PerformedProcedureStepStartDate"),
            start_time=_text(attributes, "PerformedProcedureStepStartTime"))
        try:
            step = start_step(self._engine, start, partition=peer.partition)
        except DuplicateStep as exc:
            log.info("MPPS N-CREATE from %s: %s", peer, exc)
            return DUPLICATE_SOP_INSTANCE, None
        except InvalidDataset as exc:
            log.info("MPPS N-CREATE from %s refused: %s", peer, exc)
            return INVALID_ATTRIBUTE_VALUE, None
        except StorageUnavailable:
            log.exception("MPPS N-CREATE from %s: the index failed", peer)
            return status.PROCESSING_FAILURE, None
        log.info("MPPS %s IN PROGRESS from %s (accession %r)", step.sop_uid, peer, start.accession_number)
        answer = Dataset()
        if not requested:
            answer.AffectedSOPInstanceUID = sop_uid  # pynetdicom moves it into the response (PS3.7 10.1.5.1.4)
        return status.SUCCESS, answer

    def set(self, event: Any, peer: Peer) -> tuple[int, Dataset | None]:
        if not peer.may("mpps"):
            log.warning("MPPS N-SET refused: %s may not report procedure steps", peer)
            return status.NOT_AUTHORIZED, None
        try:
            changes: Dataset = event.modification_list
        except Exception as exc:
            log.info("MPPS N-SET from %s: undecodable modification list: %s", peer, exc)
            return INVALID_ATTRIBUTE_VALUE, None
        sop_uid = str(event.request.RequestedSOPInstanceUID or "")

        def changed(keyword: str) -> str | None:
            return _text(changes, keyword) if keyword in changes else None

        change = StepChange(status=changed("PerformedProcedureStepStatus"),
                            end_date=changed("PerformedProcedureStepEndDate"),
                            end_time=changed("PerformedProcedureStepEndTime"))
        try:
            step = change_step(self._engine, sop_uid, change, partition=peer.partition)
        except NotFound as exc:
            log.info("MPPS N-SET from %s: %s", peer, exc)
            return status.NO_SUCH_OBJECT_INSTANCE, None
        except StepEnded as exc:
            log.info("MPPS N-SET from %s: %s", peer, exc)
            return MAY_NO_LONGER_BE_UPDATED, None
        except InvalidDataset as exc:
            log.info("MPPS N-SET from %s refused: %s", peer, exc)
            return INVALID_ATTRIBUTE_VALUE, None
        except StorageUnavailable:
            log.exception("MPPS N-SET from %s: the index failed", peer)
            return status.PROCESSING_FAILURE, None
        log.info("MPPS %s %s from %s", step.sop_uid, step.status, peer)
        return status.SUCCESS, Dataset()
