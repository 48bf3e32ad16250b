"""Modality Worklist C-FIND SCP (PS3.4 K, Modality Worklist Information Model - FIND).

Parses the matching keys of the identifier (top level and the Scheduled Procedure Step Sequence
item), asks :mod:`pacs.worklist.matching`, and answers each entry with the keys the modality asked
for: known ones filled, others present and empty (PS3.4 K.2.1.1.3). Text is answered in UTF-8
(``ISO_IR 192``) when a value is not ASCII.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from pacs.dimse import status
from pacs.dimse.security import Peer
from pacs.errors import InvalidQuery, StorageUnavailable
from pacs.worklist.matching import WorklistQuery, find_entries
from pacs.worklist.orders import WorklistEntry

log = logging.getLogger(__name__)

_STEP = "ScheduledProcedureStepSequence"
#: Scheduled Procedure Step item keyword -> WorklistQuery field
_STEP_KEYS = {"ScheduledStationAETitle": "station_aet", "Modality": "modality",
              "ScheduledProcedureStepStartDate": "start_date", "ScheduledProcedureStepStartTime": "start_time",
              "ScheduledProcedureStepStatus": "status", "ScheduledProcedureStepID": "step_id"}
_TOP_KEYS = {"PatientID": "patient_id", "PatientName": "patient_name", "AccessionNumber": "accession_number",
             "RequestedProcedureID": "requested_procedure_id", "StudyInstanceUID": "study_uid"}


def _text(elem: DataElement | None) -> str:
    if elem is None or elem.value is None or elem.VR == "SQ":
        return ""
    value = elem.value
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return str(value)


def parse_worklist_query(identifier: Dataset) -> WorklistQuery:
    """The matching values of a worklist identifier ("" for universal matching)."""
    values: dict[str, str] = {}
    for keyword, name in _TOP_KEYS.items():
        values[name] = _text(identifier.data_element(keyword)) if keyword in identifier else ""
    step = identifier.get(_STEP)
    if step:
        item = step[0]
        for keyword, name in _STEP_KEYS.items():
            values[name] = _text(item.data_element(keyword)) if keyword in item else ""
    return WorklistQuery(**values)


def entry_dataset(entry: WorklistEntry) -> Dataset:
    """Everything the worklist holds of ``entry``, as a worklist response (PS3.4 Table K.6-1)."""
    ds = Dataset()
    ds.AccessionNumber = entry.accession_number
    ds.ReferringPhysicianName = entry.referring_physician
    ds.PatientName = entry.patient_name
    ds.PatientID = entry.patient_id
    ds.IssuerOfPatientID = entry.issuer
    ds.PatientBirthDate = entry.birth_date
    ds.PatientSex = entry.sex
    ds.StudyInstanceUID = entry.study_uid
    ds.RequestedProcedureDescription = entry.requested_procedure
    ds.RequestedProcedureID = entry.requested_procedure_id
    step = Dataset()
    step.Modality = entry.modality
    step.ScheduledStationAETitle = entry.station_aet
    step.ScheduledProcedureStepStartDate = entry.start_date
    step.ScheduledProcedureStepStartTime = entry.start_time
    step.ScheduledProcedureStepDescription = entry.requested_procedure
    step.ScheduledProcedureStepID = entry.step_id
    step.ScheduledProcedureStepStatus = entry.status
    step.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = DicomSequence([step])
    return ds


def _answer(full: Dataset, asked: Dataset) -> Dataset:
    """The keys of ``asked`` with the values ``full`` holds (empty where it holds none)."""
    out = Dataset()
    for elem in asked:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private or elem.keyword == "SpecificCharacterSet":
            continue
        ours = full.get(elem.tag)
        if elem.VR == "SQ":
            if ours is not None and ours.VR == "SQ":
                template = elem.value[0] if elem.value else None
                items = [_answer(item, template) if template is not None and len(template) else item
                         for item in ours.value]
                out.add(DataElement(elem.tag, "SQ", DicomSequence(items)))
            else:
                out.add(DataElement(elem.tag, "SQ", DicomSequence([])))
        elif ours is not None:
            out.add(ours)
        else:
            out.add(DataElement(elem.tag, elem.VR, None))
    return out


def _needs_utf8(ds: Dataset) -> bool:
    for elem in ds:
        if elem.VR == "SQ":
            if any(_needs_utf8(item) for item in elem.value):
                return True
        elif elem.value is not None and (isinstance(elem.value, str) or elem.VR == "PN") \
                and not str(elem.value).isascii():
            return True
    return False


class WorklistSCP:
    """Handles ``EVT_C_FIND`` on the Modality Worklist information model: the called partition's orders only."""

    def __init__(self, engine: Any, *, limit: int = 1000) -> None:
        self._engine = engine
        self._limit = limit

    def handle(self, event: Any, peer: Peer) -> Iterator[tuple[int, Dataset | None]]:
        if not peer.may("find"):
            log.warning("worklist C-FIND refused: %s may not query", peer)
            yield status.NOT_AUTHORIZED, status.status_dataset(status.NOT_AUTHORIZED)
            return
        try:
            identifier: Dataset = event.identifier
            query = parse_worklist_query(identifier)
        except Exception as exc:  # an identifier pydicom cannot decode
            log.info("worklist C-FIND from %s: undecodable identifier: %s", peer, exc)
            yield status.UNABLE_TO_PROCESS, status.status_dataset(status.UNABLE_TO_PROCESS, "undecodable identifier")
            return
        count = 0
        try:
            for entry in find_entries(self._engine, query, limit=self._limit, partition=peer.partition):
                if event.is_cancelled:
                    log.info("worklist C-FIND from %s cancelled after %d matches", peer, count)
                    yield status.CANCEL, None
                    return
                answer = _answer(entry_dataset(entry), identifier)
                if _needs_utf8(answer):
                    answer.SpecificCharacterSet = "ISO_IR 192"
                yield status.PENDING, answer
                count += 1
        except InvalidQuery as exc:
            log.info("worklist C-FIND from %s: %s", peer, exc)
            yield status.UNABLE_TO_PROCESS, status.status_dataset(status.UNABLE_TO_PROCESS, str(exc))
            return
        except StorageUnavailable:
            log.exception("worklist C-FIND from %s: the index failed", peer)
            yield status.FIND_OUT_OF_RESOURCES, status.status_dataset(status.FIND_OUT_OF_RESOURCES,
                                                                      "the index database is unavailable")
            return
        log.info("worklist C-FIND from %s: %d matches", peer, count)
        yield status.SUCCESS, None
