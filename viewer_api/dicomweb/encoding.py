"""JSON bodies for DICOMweb: DICOM JSON media type, gzip content coding, ETag / If-None-Match."""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from viewer_api.dicomweb.media import DICOM_JSON, NotAcceptable, accept_of, type_matches

_GZIP_MIN_BYTES = 1024
_JSON_TYPES = (DICOM_JSON, "application/json")


def escape_markup(json_text: str) -> str:
    """JSON text with ``<``, ``>`` and ``&`` escaped: a name like ``<script>`` can never be read as HTML."""
    return json_text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON with markup characters escaped."""
    return escape_markup(json.dumps(value, ensure_ascii=False, separators=(",", ":"))).encode("utf-8")


def json_media_type(request: Request) -> str:
    """``application/dicom+json`` unless only ``application/json`` is accepted; else 406 (no XML here)."""
    for rng in accept_of(request):
        if rng.is_multipart:
            continue
        for candidate in _JSON_TYPES:
            if type_matches(rng.media_type, candidate):
                return candidate
    raise NotAcceptable("this resource is available as application/dicom+json")


def accepts_gzip(request: Request) -> bool:
    for piece in request.headers.get("accept-encoding", "").split(","):
        name, _, params = piece.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=")
            return not (params and q.replace(".", "", 1).isdigit() and float(q) == 0)
    return False


def gzip_bytes(data: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip; level 1: DICOM JSON still shrinks ~10x
    return compressor.compress(data) + compressor.flush()


def json_response(request: Request, body: bytes, media_type: str, *, etag: bool = False,
                  status_code: int = 200, headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    """A JSON body, gzip-coded when the client accepts it; with ``etag`` a 304 for a matching If-None-Match."""
    hdrs = {"X-Content-Type-Options": "nosniff", "Vary": "Accept, Accept-Encoding"}
    hdrs.update(headers or {})
    if etag:
        tag = f'W/"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
        hdrs["ETag"] = tag
        hdrs["Cache-Control"] = "private, no-cache"
        wanted = {t.strip() for t in request.headers.get("if-none-match", "").split(",")}
        if tag in wanted or tag.removeprefix("W/") in wanted or "*" in wanted:
            return Response(status_code=304, headers=hdrs)
    if len(body) >= _GZIP_MIN_BYTES and accepts_gzip(request):
        body = gzip_bytes(body)
        hdrs["Content-Encoding"] = "gzip"
    return Response(body, status_code=status_code, media_type=media_type, headers=hdrs)
