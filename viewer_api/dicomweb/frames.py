"""WADO-RS frames (PS3.18 10.4.1.1.3): pixel data of selected frames, one ranged read each.

Stored codestreams go out untouched in their own media type (``image/jpeg``, ``image/jls``,
``image/jp2``, ``image/jphc``, ``image/dicom-rle``...) or, when the client wants
``application/octet-stream`` without ``transfer-syntax=*``, decoded to native little endian.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.dataset import Dataset
from starlette.concurrency import iterate_in_threadpool

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.retrieve import StoredInstance, read_frames
from viewer_api.access import current_scope
from viewer_api.auth.access import STUDY_READERS
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.media import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    MediaRange,
    NotAcceptable,
    accept_of,
    describe,
    frame_media_type,
    type_matches,
)
from viewer_api.dicomweb.multipart import MultipartWriter
from viewer_api.dicomweb.params import frame_numbers, uid
from viewer_api.dicomweb.pixels import (
    Image,
    check_frames,
    decodable,
    decode,
    frame_array,
    frames_from_whole_object,
    load_image,
    locate,
    native_bytes,
    native_from_stored,
)

router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute,
                   dependencies=[Depends(STUDY_READERS)])
_BATCH = 32  # frames read concurrently per step of the response


@dataclass(frozen=True, slots=True)
class FramePlan:
    """How frames go out: each part's media type and transfer syntax, and whether to decode."""

    media_type: str
    transfer_syntax: str
    decode: bool
    multipart: bool

    @property
    def part_content_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.transfer_syntax}"


def plan(accept: Sequence[MediaRange], stored_ts: str, encapsulated: bool, count: int) -> FramePlan:
    """The first representation in the client's order that can be produced; else 406."""
    compressed_type = frame_media_type(stored_ts)
    for rng in accept:
        multipart = rng.is_multipart or "*" in rng.media_type  # "*/*" gets the standard multipart answer
        if not multipart and count != 1:
            continue
        part, wanted = rng.part_type, rng.transfer_syntax
        if encapsulated:
            if part != OCTET_STREAM and type_matches(part, compressed_type) and wanted in (None, "*", stored_ts):
                return FramePlan(compressed_type, stored_ts, False, multipart)
            if part == OCTET_STREAM and wanted in ("*", stored_ts):
                return FramePlan(OCTET_STREAM, stored_ts, False, multipart)
            if type_matches(part, OCTET_STREAM) and wanted in (None, EXPLICIT_VR_LITTLE_ENDIAN) \
                    and decodable(stored_ts):
                return FramePlan(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, True, multipart)
        elif type_matches(part, OCTET_STREAM) and wanted in (None, "*", EXPLICIT_VR_LITTLE_ENDIAN, stored_ts):
            return FramePlan(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, False, multipart)
    stored_as = compressed_type if encapsulated else OCTET_STREAM
    raise NotAcceptable(f"the frames are available as {stored_as} (stored) or application/octet-stream; "
                        f"not as {describe(list(accept))}")


def image_for(archive: Archive, scope: AccessScope, stored: StoredInstance, how: FramePlan) -> Image:
    """The instance with its header, read from the index only when the frames need more than a copy."""
    if how.decode or not stored.frames or stored.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN:
        return load_image(archive, scope, stored)
    return Image(stored, Dataset())


def frame_bytes(archive: Archive, image: Image, numbers: Sequence[int], how: FramePlan) -> list[bytes]:
    """The frames' bytes as ``how`` says (one ranged read per frame, concurrent)."""
    stored = image.stored
    if not stored.frames:
        return [native_bytes(image.header, a) for a in frames_from_whole_object(archive, stored, numbers)]
    if how.decode and not stored.encapsulated:
        return [native_bytes(image.header, frame_array(archive, image, n)) for n in numbers]
    raw = read_frames(archive.store, stored, numbers)
    if how.decode:
        return [native_bytes(image.header, decode(image.header, stored.transfer_syntax_uid, r)) for r in raw]
    if not stored.encapsulated:
        return [native_from_stored(image.header, stored.transfer_syntax_uid, r) for r in raw]
    return raw


def frames_response(archive: Archive, image: Image, numbers: list[int], how: FramePlan) -> Response:
    """Frames as a multipart/related body (streamed in batches) or one single part."""
    first = frame_bytes(archive, image, numbers[:_BATCH], how)  # errors surface as a status, not a cut stream
    headers = {"X-Content-Type-Options": "nosniff", "Vary": "Accept", "Cache-Control": "private, max-age=300"}
    if not how.multipart:
        return Response(first[0], media_type=how.part_content_type, headers=headers)
    writer = MultipartWriter()

    def body() -> Iterator[bytes]:
        batch = first
        position = 0
        while True:
            for data in batch:
                yield writer.part_head(how.part_content_type, length=len(data)) + data + writer.part_tail()
            position += len(batch)
            if position >= len(numbers):
                break
            batch = frame_bytes(archive, image, numbers[position : position + _BATCH], how)
        yield writer.close()

    media = writer.content_type(how.media_type, transfer_syntax=how.transfer_syntax)
    return StreamingResponse(iterate_in_threadpool(body()), media_type=media, headers=headers)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            summary="Pixel data of frames (WADO-RS)")  # fmt: skip
async def retrieve_frames(study: str, series: str, instance: str, frames: str, request: Request,
                          scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    study, series, instance = uid(study, "StudyInstanceUID"), uid(series, "SeriesInstanceUID"), \
        uid(instance, "SOPInstanceUID")
    numbers = frame_numbers(frames)
    accept = accept_of(request)
    archive = archive_of(request)

    def work() -> Response:
        stored = locate(archive, scope, study, series, instance)
        check_frames(stored, numbers)
        how = plan(accept, stored.transfer_syntax_uid, stored.encapsulated, len(numbers))
        return frames_response(archive, image_for(archive, scope, stored, how), numbers, how)

    return await asyncio.to_thread(work)
