"""C-FIND SCP (PS3.4 C.4.1) on the one query engine, and the identifier translation C-MOVE/C-GET share.

Patient Root and Study Root information models; PATIENT (Patient Root only), STUDY, SERIES and
IMAGE levels. Matching (single value, universal, wildcards, ranges, UID lists, multiple values,
PN case- and accent-insensitive) is :mod:`pacs.query`'s, unchanged, so C-FIND and QIDO-RS agree.
Queries are accepted hierarchically and also without the unique keys of the levels above
(relational-style), as most SCUs expect.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pacs.access import AccessScope, ScopeProvider
from pacs.dimse import status
from pacs.dimse.contexts import PATIENT_ROOT_MODELS
from pacs.dimse.security import Peer
from pacs.errors import InvalidQuery
from pacs.query import Level, QueryRequest, run_query

log = logging.getLogger(__name__)

#: Identifier elements that are not query keys.
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability",
             "TimezoneOffsetFromUTC"}


class Model(Enum):
    """The Query/Retrieve information model of a presentation context (PS3.4 C.6)."""

    PATIENT_ROOT = "patient"
    STUDY_ROOT = "study"

    @classmethod
    def of(cls, abstract_syntax: str) -> Model:
        if UID(abstract_syntax) in PATIENT_ROOT_MODELS:
            return cls.PATIENT_ROOT
        return cls.STUDY_ROOT

    def levels(self) -> tuple[Level, ...]:
        if self is Model.PATIENT_ROOT:
            return (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
        return (Level.STUDY, Level.SERIES, Level.IMAGE)


class IdentifierError(Exception):
    """The identifier does not fit the information model (PS3.4 C.4.1.1.4: 0xA900)."""


@dataclass(frozen=True, slots=True)
class ParsedIdentifier:
    level: Level
    filters: dict[str, str]  # keyword -> DICOM-encoded query value ("" for return keys)


def _query_value(elem: DataElement) -> str:
    if elem.VR == "SQ" or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(_one(v) for v in value)
    return _one(value)


def _one(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return str(value)


def parse_identifier(identifier: Dataset, model: Model) -> ParsedIdentifier:
    """The level and every key of a C-FIND/C-MOVE/C-GET identifier; raises :class:`IdentifierError`."""
    raw_level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if not raw_level:
        raise IdentifierError("the identifier has no QueryRetrieveLevel")
    try:
        level = Level(raw_level)
    except ValueError:
        raise IdentifierError(f"QueryRetrieveLevel {raw_level!r} is not PATIENT, STUDY, SERIES or IMAGE") from None
    if level not in model.levels():
        raise IdentifierError(f"level {level.value} is not part of the {model.value} root information model")
    filters: dict[str, str] = {}
    for elem in identifier:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.is_private:
            continue
        keyword = elem.keyword
        if not keyword or keyword in _NOT_KEYS:
            continue
        filters[keyword] = _query_value(elem)
    return ParsedIdentifier(level, filters)


class FindSCP:
    """Handles ``EVT_C_FIND``: yields one pending response per match, honouring C-CANCEL."""

    def __init__(self, engine: Engine, ae_title: str, scope: ScopeProvider = AccessScope.everything,
                 partition_titles: Mapping[int, str] | None = None) -> None:
        """``partition_titles``: the AE title answered as Retrieve AE Title in each partition but the default."""
        self._engine = engine
        self._scope = scope
        self._ae_title = ae_title
        self._titles = dict(partition_titles or {})

    def handle(self, event: Any, peer: Peer) -> Iterator[tuple[int, Dataset | None]]:
        if not peer.may("find"):
            log.warning("C-FIND refused: %s may not query", peer)
            yield status.NOT_AUTHORIZED, status.status_dataset(status.NOT_AUTHORIZED)
            return
        model = Model.of(str(event.context.abstract_syntax))
        try:
            parsed = parse_identifier(event.identifier, model)
        except IdentifierError as exc:
            log.info("C-FIND from %s refused: %s", peer, exc)
            yield status.IDENTIFIER_DOES_NOT_MATCH, status.status_dataset(status.IDENTIFIER_DOES_NOT_MATCH, str(exc))
            return
        except Exception as exc:  # an identifier pydicom cannot decode
            log.info("C-FIND from %s: undecodable identifier: %s", peer, exc)
            yield status.UNABLE_TO_PROCESS, status.status_dataset(status.UNABLE_TO_PROCESS, "undecodable identifier")
            return
        request = QueryRequest(parsed.level, parsed.filters, scope=self._scope().in_partition(peer.partition))
        count = 0
        try:
            for match in run_query(self._engine, request):
                if event.is_cancelled:
                    log.info("C-FIND from %s cancelled after %d matches", peer, count)
                    yield status.CANCEL, None
                    return
                yield status.PENDING, self._response(match.to_dataset(), parsed.level, peer.partition)
                count += 1
        except InvalidQuery as exc:
            log.info("C-FIND from %s: %s", peer, exc)
            yield status.UNABLE_TO_PROCESS, status.status_dataset(status.UNABLE_TO_PROCESS, str(exc))
            return
        except SQLAlchemyError:
            log.exception("C-FIND from %s: the index failed", peer)
            yield status.FIND_OUT_OF_RESOURCES, status.status_dataset(status.FIND_OUT_OF_RESOURCES,
                                                                      "the index database is unavailable")
            return
        log.info("C-FIND %s level from %s: %d matches", parsed.level.value, peer, count)
        yield status.SUCCESS, None

    def _response(self, ds: Dataset, level: Level, partition: int) -> Dataset:
        ds.QueryRetrieveLevel = level.value
        ds.RetrieveAETitle = self._titles.get(partition, self._ae_title)
        return ds
