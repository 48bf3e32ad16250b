"""WADO-RS retrieve of a study, series or instance (PS3.18 10.4.1.1.1) as Part 10 objects.

The body is ``multipart/related; type="application/dicom"``, streamed from the object store:
small objects are read a few at a time ahead of the writer (so S3 latency overlaps), large ones
are copied in chunks. ``transfer-syntax=*`` or no parameter returns every instance as stored;
Explicit/Implicit VR Little Endian is produced on request through :mod:`pacs.transcode`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.retrieve import StoredInstance, find_instances, open_instance
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

_READERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="wado-reader")
_READ_AHEAD = 8  # objects fetched ahead of the one being written
_WHOLE_OBJECT_MAX = 16 * 1024 * 1024  # larger objects are streamed in chunks, not read ahead
_CHUNK = 1024 * 1024
_NO_COPY_SIZE = 256 * 1024
_WRITE_SIZE = 1024 * 1024  # coalesce small parts into writes of about this size (larger ones measured slower)


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


def _read_ahead(archive: Archive, instances: Sequence[StoredInstance],
                target: str | None) -> Iterator[tuple[StoredInstance, Future[bytes] | None]]:  # fmt: skip
    """Each instance with the future of its bytes (None: too large, stream it)."""
    window: deque[tuple[StoredInstance, Future[bytes] | None]] = deque()
    pending = iter(instances)

    def refill() -> None:
        while len(window) < _READ_AHEAD:
            inst = next(pending, None)
            if inst is None:
                return
            whole = inst.size_bytes <= _WHOLE_OBJECT_MAX or _needs_transcode(inst, target)
            window.append((inst, _READERS.submit(_fetch, archive, inst, target) if whole else None))

    refill()
    try:
        while window:
            item = window.popleft()
            refill()
            yield item
    finally:
        for _inst, fut in window:
            if fut is not None:
                fut.cancel()


def _content_type(instance: StoredInstance, target: str | None) -> str:
    return f"{DICOM}; transfer-syntax={target or instance.transfer_syntax_uid}"


def retrieve_response(archive: Archive, instances: list[StoredInstance], how: RetrievePlan) -> Response:
    """The instances as one multipart body (or one single part), streamed.

    Without transcoding every size is known from the index, so the body gets a Content-Length
    (no chunked encoding); the writer runs on the event loop and only waits for the readers, and
    parts are coalesced into large writes.
    """
    headers = {"X-Content-Type-Options": "nosniff", "Vary": "Accept"}
    if not how.multipart:
        data = _fetch(archive, instances[0], how.target)
        return Response(data, media_type=_content_type(instances[0], how.target), headers=headers)
    writer = MultipartWriter()
    heads = [writer.part_head(_content_type(i, how.target), length=i.size_bytes) for i in instances]
    if not any(_needs_transcode(i, how.target) for i in instances):
        tail = len(writer.part_tail())
        headers["Content-Length"] = str(sum(len(h) + i.size_bytes + tail for h, i in zip(heads, instances, strict=True))
                                        + len(writer.close()))
    parts = _read_ahead(archive, instances, how.target)
    first = next(parts)
    first_data = first[1].result() if first[1] is not None else None  # a missing object is a status, not a cut

    async def body() -> AsyncIterator[bytes]:
        out: list[bytes] = []  # pieces of the next write, joined once
        size = 0
        for index, (inst, fut) in enumerate(itertools.chain([first], parts)):
            data = first_data if index == 0 else await _result(fut)
            if data is None:
                yield b"".join([*out, heads[index]])
                out, size = [], 0
                async for chunk in _stream_object(archive, inst):
                    yield chunk
                out.append(writer.part_tail())
                continue
            head = heads[index] if len(data) == inst.size_bytes else \
                writer.part_head(_content_type(inst, how.target), length=len(data))  # transcoded: its own length
            if len(data) >= _NO_COPY_SIZE:  # large enough to be a write of its own: not copied into a join
                yield b"".join([*out, head])
                yield data
                out, size = [writer.part_tail()], 0
                continue
            out += (head, data, writer.part_tail())
            size += len(data)
            if size >= _WRITE_SIZE:
                yield b"".join(out)
                out, size = [], 0
        out.append(writer.close())
        yield b"".join(out)

    return StreamingResponse(body(), media_type=writer.content_type(DICOM), headers=headers)


async def _result(fut: Future[bytes] | None) -> bytes | None:
    if fut is None:
        return None
    data: bytes = await asyncio.wrap_future(fut)
    return data


async def _stream_object(archive: Archive, inst: StoredInstance) -> AsyncIterator[bytes]:
    """A large object in chunks, each read in a worker thread."""
    fh = await asyncio.to_thread(open_instance, archive.store, inst)
    try:
        while chunk := await asyncio.to_thread(fh.read, _CHUNK):
            yield chunk
    finally:
        fh.close()


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
