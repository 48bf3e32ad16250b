"""WADO-RS bulk data (PS3.18 10.4.1.1.5): the values behind the BulkDataURIs the metadata gives.

``bulk/7FE00010`` is the pixel data: native frames as one ``application/octet-stream`` part,
compressed frames one part each in their own media type (negotiated like frames). Any other tag
is read from the stored object's header and sent little endian as ``application/octet-stream``.
"""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pydicom
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydicom.dataelem import DataElement

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.retrieve import StoredInstance, open_instance
from viewer_api.access import current_scope
from viewer_api.auth.access import STUDY_READERS
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.frames import frame_bytes, frames_response, image_for, plan
from viewer_api.dicomweb.media import OCTET_STREAM, BadRequest, MediaRange, NotAcceptable, accept_of, type_matches
from viewer_api.dicomweb.multipart import MultipartWriter
from viewer_api.dicomweb.params import uid
from viewer_api.dicomweb.pixels import PIXEL_DATA_TAG, check_frames, frame_count, locate

router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute,
                   dependencies=[Depends(STUDY_READERS)])
_PIXEL_TAGS = {PIXEL_DATA_TAG, "7FE00008", "7FE00009"}
_PACK = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q", "AT": "I"}
_WORD = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _octet_stream_wanted(accept: list[MediaRange]) -> bool | None:
    """Multipart (True) or single part (False) octet-stream, as the client prefers; None: 406."""
    for rng in accept:
        if type_matches(rng.part_type, OCTET_STREAM):
            return rng.is_multipart or rng.media_type == "*/*"
    return None


def element_bytes(archive: Archive, stored: StoredInstance, tag: int) -> bytes:
    """The value of the first element with ``tag`` in the stored object's header, little endian."""
    with open_instance(archive.store, stored) as fh:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
    found: DataElement | None = ds.get(tag)
    if found is None:
        found = next((e for e in ds.iterall() if e.tag == tag), None)
    if found is None:
        raise NotFound(f"the instance has no element ({tag >> 16:04X},{tag & 0xFFFF:04X})")
    value, vr = found.value, str(found.VR)
    if isinstance(value, bytes):
        width = _WORD.get(vr)
        if width and not ds.original_encoding[1] and value:  # stored big endian
            return np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    values = list(value) if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    if vr in _PACK:
        return struct.pack(f"<{len(values)}{_PACK[vr]}", *values)
    return "\\".join(str(v) for v in values).encode("utf-8")


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}", summary="Bulk data (WADO-RS)")
async def retrieve_bulk(study: str, series: str, instance: str, tag: str, request: Request,
                        scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    study, series, instance = uid(study, "StudyInstanceUID"), uid(series, "SeriesInstanceUID"), \
        uid(instance, "SOPInstanceUID")
    if len(tag) != 8 or any(c not in "0123456789abcdefABCDEF" for c in tag):
        raise BadRequest("the bulk data tag must be 8 hexadecimal digits")
    tag = tag.upper()
    accept = accept_of(request)
    archive = archive_of(request)

    def work() -> Response:
        stored = locate(archive, scope, study, series, instance)
        if tag in _PIXEL_TAGS:
            return _pixel_data(archive, scope, stored, accept)
        multipart = _octet_stream_wanted(accept)
        if multipart is None:
            raise NotAcceptable("bulk data is available as application/octet-stream")
        data = element_bytes(archive, stored, int(tag, 16))
        return _single(data, multipart)

    return await asyncio.to_thread(work)


def _single(data: bytes, multipart: bool) -> Response:
    headers = {"X-Content-Type-Options": "nosniff", "Vary": "Accept"}
    if not multipart:
        return Response(data, media_type=OCTET_STREAM, headers=headers)
    writer = MultipartWriter()
    body = writer.body([(OCTET_STREAM, data)])
    return Response(body, media_type=writer.content_type(OCTET_STREAM), headers=headers)


def _pixel_data(archive: Archive, scope: AccessScope, stored: StoredInstance, accept: list[MediaRange]) -> Response:
    numbers = list(range(1, frame_count(stored) + 1))
    check_frames(stored, numbers)
    how = plan(accept, stored.transfer_syntax_uid, stored.encapsulated, 1 if not stored.encapsulated else len(numbers))
    image = image_for(archive, scope, stored, how)
    if stored.encapsulated and not how.decode:
        return frames_response(archive, image, numbers, how)
    # Native pixel data is one value: every frame, back to back, in one part.
    data = b"".join(frame_bytes(archive, image, numbers, how))
    if not how.multipart:
        return Response(data, media_type=how.part_content_type, headers={"X-Content-Type-Options": "nosniff"})
    writer = MultipartWriter()
    body = writer.body([(how.part_content_type, data)])
    return Response(body, media_type=writer.content_type(how.media_type, transfer_syntax=how.transfer_syntax),
                    headers={"X-Content-Type-Options": "nosniff", "Vary": "Accept"})  # fmt: skip
