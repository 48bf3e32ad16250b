"""C-MOVE and C-GET SCPs (PS3.4 C.4.2, C.4.3) on the one retrieve path shared with WADO.

The identifier is resolved with :func:`pacs.query.run_query` at its own level, then to stored
instances with :mod:`pacs.retrieve`. Each instance is sent as stored when the receiver accepted
its transfer syntax, byte for byte; otherwise it is decompressed to Explicit (or Implicit) VR
Little Endian by :mod:`pacs.transcode`. pynetdicom sends the pending responses with the remaining,
completed, failed and warning counts; C-CANCEL is checked before every sub-operation.
"""

from __future__ import annotations

import io
import logging
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.presentation import PresentationContext
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from pacs.access import AccessScope, ScopeProvider
from pacs.dimse import status
from pacs.dimse.find import IdentifierError, Model, parse_identifier
from pacs.dimse.security import AccessPolicy, Peer
from pacs.errors import CloudfilmError
from pacs.query import Level, QueryRequest, run_query
from pacs.retrieve import StoredInstance, find_instances, find_instances_by_sop, open_instance
from pacs.storage import ObjectStore
from pacs.transcode import to_transfer_syntax

log = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: odd context IDs 1..255
MAX_SUBOPERATIONS = 65535  # the counts are US


class RetrieveError(Exception):
    """The identifier cannot be resolved; pynetdicom answers 0xC5xx/0xC4xx (Unable to process)."""


def resolve(engine: Engine, identifier: Dataset, model: Model, scope: AccessScope) -> list[StoredInstance]:
    """Every stored instance the identifier names, in series and instance order."""
    try:
        parsed = parse_identifier(identifier, model)
    except IdentifierError as exc:
        raise RetrieveError(str(exc)) from exc
    if not any(parsed.filters.get(k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                               "SOPInstanceUID")):
        raise RetrieveError("the identifier has no unique key value (PS3.4 C.4.2.2.1)")
    level = Level.STUDY if parsed.level is Level.PATIENT else parsed.level
    try:
        matches = list(run_query(engine, QueryRequest(level, parsed.filters, scope=scope)))
        if level is Level.IMAGE:
            sop_uids = [str(m.get("SOPInstanceUID")) for m in matches]
            found = {i.sop_uid: i for i in find_instances_by_sop(engine, scope, sop_uids)}
            return [found[u] for u in sop_uids if u in found]
        key = "StudyInstanceUID" if level is Level.STUDY else "SeriesInstanceUID"
        out: list[StoredInstance] = []
        for match in matches:
            uid = str(match.get(key))
            if level is Level.STUDY:
                out.extend(find_instances(engine, scope, study_uid=uid))
            else:
                out.extend(find_instances(engine, scope, series_uid=uid))
        return out
    except CloudfilmError as exc:  # NotFound between query and locate (deleted meanwhile), InvalidQuery
        raise RetrieveError(str(exc)) from exc
    except SQLAlchemyError as exc:
        raise RetrieveError("the index database is unavailable") from exc


def proposed_contexts(instances: Iterable[StoredInstance]) -> list[PresentationContext]:
    """For each SOP class: one context per stored transfer syntax, and one with the uncompressed fallbacks.

    Separate contexts let the receiver accept the stored syntax and the fallback independently;
    an uncompressed stored syntax gets its own context too, or a receiver that prefers Implicit VR
    in the fallback context would have every Explicit VR instance transcoded for nothing.
    Capped at 128 contexts, fallbacks first so every SOP class stays sendable.
    """
    by_class: dict[str, list[str]] = {}
    for inst in instances:
        syntaxes = by_class.setdefault(inst.sop_class_uid, [])
        if inst.transfer_syntax_uid not in syntaxes:
            syntaxes.append(inst.transfer_syntax_uid)
    fallbacks: list[PresentationContext] = []
    stored: list[PresentationContext] = []
    for sop_class, syntaxes in by_class.items():
        fallbacks.append(_context(sop_class, list(_UNCOMPRESSED)))
        stored.extend(_context(sop_class, [ts]) for ts in syntaxes)
    return (fallbacks + stored)[:_MAX_CONTEXTS]


def _context(abstract_syntax: str, syntaxes: Sequence[str]) -> PresentationContext:
    cx = PresentationContext()
    cx.abstract_syntax = UID(abstract_syntax)
    cx.transfer_syntax = [UID(ts) for ts in syntaxes]
    return cx


def outgoing_dataset(store: ObjectStore, inst: StoredInstance, accepted: set[str]) -> Dataset:
    """The dataset to send for ``inst`` given the transfer syntaxes accepted for its SOP class.

    When it cannot be sent, returns a dataset without File Meta Information, which pynetdicom
    counts as a failed sub-operation (and lists in Failed SOP Instance UID List).
    """
    try:
        with open_instance(store, inst) as fh:
            data = fh.read()
        if inst.transfer_syntax_uid not in accepted:
            target = next((ts for ts in _UNCOMPRESSED if ts in accepted), None)
            if target is None:
                raise CloudfilmError(f"the receiver accepted neither {inst.transfer_syntax_uid} nor an "
                                     "uncompressed transfer syntax for this SOP class")
            data = to_transfer_syntax(data, target)
        return pydicom.dcmread(io.BytesIO(data))
    except (CloudfilmError, OSError, ValueError) as exc:
        log.warning("cannot send instance %s: %s", inst.sop_uid, exc)
        failed = Dataset()
        failed.SOPClassUID = inst.sop_class_uid
        failed.SOPInstanceUID = inst.sop_uid
        return failed


def _accepted_by_class(contexts: Iterable[PresentationContext]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cx in contexts:
        if cx.transfer_syntax:
            out.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return out


def _suboperations(
    store: ObjectStore, instances: list[StoredInstance], accepted: dict[str, set[str]], event: Any, peer: Peer
) -> Iterator[tuple[int, Dataset | None]]:
    for n, inst in enumerate(instances):
        if event.is_cancelled:
            log.info("retrieve for %s cancelled after %d of %d sub-operations", peer, n, len(instances))
            yield status.CANCEL, None
            return
        yield status.PENDING, outgoing_dataset(store, inst, accepted.get(inst.sop_class_uid, set()))


class MoveSCP:
    """Handles ``EVT_C_MOVE``: sends the instances to a destination configured by AE title."""

    def __init__(self, engine: Engine, store: ObjectStore, policy: AccessPolicy,
                 tls_args: Callable[[str], tuple[ssl.SSLContext, str]],
                 scope: ScopeProvider = AccessScope.everything) -> None:
        self._engine = engine
        self._scope = scope
        self._store = store
        self._policy = policy
        self._tls_args = tls_args  # called only for ``tls = true`` destinations

    def handle(self, event: Any, peer: Peer) -> Iterator[Any]:
        destination_aet = str(event.move_destination or "").strip()
        if not peer.may("move"):
            raise PermissionError(f"{peer.calling_aet} may not move")  # contexts are pruned: unreachable
        remote = self._policy.destination(destination_aet)
        if remote is None:
            log.warning("C-MOVE from %s to unknown destination %r", peer, destination_aet)
            yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
            return
        model = Model.of(str(event.context.abstract_syntax))
        instances = resolve(self._engine, event.identifier, model, self._scope().in_partition(peer.partition))
        accepted: dict[str, set[str]] = {}

        def on_accepted(sub_event: Any) -> None:
            accepted.update(_accepted_by_class(sub_event.assoc.accepted_contexts))

        kwargs: dict[str, Any] = {
            "contexts": proposed_contexts(instances),
            "evt_handlers": [(evt.EVT_ACCEPTED, on_accepted)],
            "move_originator": peer.calling_aet,  # see pacs.dimse.overrides.requestor.ArchiveAE
        }
        if remote.tls:
            kwargs["tls_args"] = self._tls_args(remote.host)
        yield remote.host, remote.port, kwargs
        if len(instances) > MAX_SUBOPERATIONS:
            raise RetrieveError(f"{len(instances)} instances match; at most {MAX_SUBOPERATIONS} per C-MOVE")
        log.info("C-MOVE from %s: %d instances to %s (%s:%d)", peer, len(instances), destination_aet,
                 remote.host, remote.port)
        yield len(instances)
        yield from _suboperations(self._store, instances, accepted, event, peer)


class GetSCP:
    """Handles ``EVT_C_GET``: sends the instances back on the same association (PS3.4 C.4.3)."""

    def __init__(self, engine: Engine, store: ObjectStore, scope: ScopeProvider = AccessScope.everything) -> None:
        self._engine = engine
        self._store = store
        self._scope = scope

    def handle(self, event: Any, peer: Peer) -> Iterator[Any]:
        if not peer.may("get"):
            raise PermissionError(f"{peer.calling_aet} may not get")  # contexts are pruned: unreachable
        model = Model.of(str(event.context.abstract_syntax))
        instances = resolve(self._engine, event.identifier, model, self._scope().in_partition(peer.partition))
        if len(instances) > MAX_SUBOPERATIONS:
            raise RetrieveError(f"{len(instances)} instances match; at most {MAX_SUBOPERATIONS} per C-GET")
        accepted = _accepted_by_class(cx for cx in event.assoc.accepted_contexts if cx.as_scu)
        log.info("C-GET from %s: %d instances", peer, len(instances))
        yield len(instances)
        yield from _suboperations(self._store, instances, accepted, event, peer)
