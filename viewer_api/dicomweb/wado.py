"""WADO-RS retrieve of a study, series or instance (PS3.18 10.4.1.1.1) as Part 10 objects.

The body is ``multipart/related; type="application/dicom"``, streamed from the object store in
large buffers read ahead of the writer, several objects at once (so S3 latency overlaps), large
objects in ranges. ``transfer-syntax=*`` or no parameter returns every instance as stored;
Explicit/Implicit VR Little Endian is produced on request through :mod:`pacs.transcode`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.retrieve import StoredInstance, find_instances
from pacs.storage.readahead import Piece, read_ahead
from pacs.transcode import TARGETS, to_transfer_syntax
from viewer_api.access import current_scope
from viewer_api.auth.access import STUDY_READERS
from viewer_api.auth.http_audit import RETRIEVE
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.media import (
    DICOM,
    NATIVE_TRANSFER_SYNTAXES,
    MediaRange,
    NotAcceptable,
    accept_of,
    describe,
    type_matches,
    wants_transfer_syntax,
)
from viewer_api.dicomweb.multipart import MultipartWriter
from viewer_api.dicomweb.params import uid
from viewer_api.dicomweb.pixels import decodable

log = logging.getLogger(__name__)
router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute,
                   dependencies=[Depends(STUDY_READERS.audited(RETRIEVE))])


@dataclass(frozen=True, slots=True)
class RetrievePlan:
    multipart: bool
    target: str | None  # None: every instance as stored


def plan(accept: Sequence[MediaRange], instances: Sequence[StoredInstance]) -> RetrievePlan:
    """The first acceptable representation every instance can be sent in; else 406."""
    for rng in accept:
        if rng.is_multipart:
            if not type_matches(rng.part_type, DICOM):
                continue
            multipart = True
        elif rng.media_type == DICOM and len(instances) == 1:
            multipart = False
        elif rng.media_type in ("*/*", "application/*", DICOM):
            multipart = True
        else:
            continue
        targets = {wants_transfer_syntax(rng, i.transfer_syntax_uid) for i in instances}
        if targets == {None}:
            return RetrievePlan(multipart, None)
        wanted = next(t for t in targets if t is not None)
        if all(_can_produce(i.transfer_syntax_uid, wanted) for i in instances):
            return RetrievePlan(multipart, wanted)
    raise NotAcceptable(f"the instances are available as application/dicom, stored or in Explicit VR Little "
                        f"Endian; not as {describe(list(accept))}")


def _can_produce(stored: str, target: str) -> bool:
    if stored == target:
        return True
    return target in TARGETS and (stored in NATIVE_TRANSFER_SYNTAXES or stored == "1.2.840.10008.1.2.1.99"
                                  or decodable(stored))


def _needs_transcode(instance: StoredInstance, target: str | None) -> bool:
    return target is not None and target != instance.transfer_syntax_uid


def _fetch(archive: Archive, instance: StoredInstance, target: str | None) -> bytes:
    data = archive.store.get_bytes(instance.object_key)
    return to_transfer_syntax(data, target) if target is not None and _needs_transcode(instance, target) else data


def _content_type(instance: StoredInstance, target: str | None) -> str:
    return f"{DICOM}; transfer-syntax={target or instance.transfer_syntax_uid}"


def retrieve_response(archive: Archive, instances: list[StoredInstance], how: RetrievePlan) -> Response:
    """The instances as one multipart body (or one single part), streamed.

    Without transcoding every size is known from the index, so the body gets a Content-Length
    (no chunked encoding). Part heads, objects and tails are laid out in large reused buffers by
    :func:`pacs.storage.readahead.read_ahead` (objects read concurrently, in order on the wire);
    the event loop only awaits each buffer and sends it. A failure before the first buffer is a
    status; a failure later cuts the body short (the client sees it end before Content-Length).
    """
    headers = {"X-Content-Type-Options": "nosniff", "Vary": "Accept"}
    if not how.multipart:
        data = _fetch(archive, instances[0], how.target)
        return Response(data, media_type=_content_type(instances[0], how.target), headers=headers)
    writer = MultipartWriter()
    close = writer.close()
    pieces = [_piece(archive, writer, inst, how.target) for inst in instances]
    if not any(p.produce is not None for p in pieces):
        headers["Content-Length"] = str(sum(len(p.prefix) + p.size + len(p.suffix) for p in pieces) + len(close))
    batches = read_ahead(archive.store, pieces, trailer=close)
    first = next(batches)
    try:
        first.result()  # a missing object is a status, not a cut
    except BaseException:
        batches.close()
        raise

    async def body() -> AsyncIterator[memoryview | bytes]:
        sent = 0
        try:
            for fut in itertools.chain([first], batches):
                yield await asyncio.wrap_future(fut)
                sent += 1
        except Exception:
            log.exception("WADO-RS retrieve of %d instances cut short after %d buffers", len(instances), sent)
            raise
        finally:
            batches.close()

    return StreamingResponse(body(), media_type=writer.content_type(DICOM), headers=headers)


def _piece(archive: Archive, writer: MultipartWriter, inst: StoredInstance, target: str | None) -> Piece:
    if not _needs_transcode(inst, target):
        head = writer.part_head(_content_type(inst, target), length=inst.size_bytes)
        return Piece(inst.object_key, inst.size_bytes, head, writer.part_tail())

    def frame(length: int) -> tuple[bytes, bytes]:
        return writer.part_head(_content_type(inst, target), length=length), writer.part_tail()

    return Piece(inst.object_key, inst.size_bytes, produce=lambda: _fetch(archive, inst, target), frame=frame)


async def _retrieve(request: Request, scope: AccessScope, study: str, series: str | None,
                    instance: str | None) -> Response:  # fmt: skip
    study = uid(study, "StudyInstanceUID")
    series = uid(series, "SeriesInstanceUID") if series is not None else None
    instance = uid(instance, "SOPInstanceUID") if instance is not None else None
    accept = accept_of(request)
    archive = archive_of(request)

    def work() -> Response:
        found = find_instances(archive.engine, scope, study_uid=study, series_uid=series, sop_uid=instance)
        return retrieve_response(archive, found, plan(accept, found))

    return await asyncio.to_thread(work)


@router.get("/studies/{study}", summary="Retrieve a study's instances (WADO-RS)")
async def retrieve_study(study: str, request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _retrieve(request, scope, study, None, None)


@router.get("/studies/{study}/series/{series}", summary="Retrieve a series' instances (WADO-RS)")
async def retrieve_series(study: str, series: str, request: Request,
                          scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _retrieve(request, scope, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{instance}", summary="Retrieve an instance (WADO-RS)")
async def retrieve_instance(study: str, series: str, instance: str, request: Request,
                            scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _retrieve(request, scope, study, series, instance)
