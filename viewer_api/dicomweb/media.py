"""Media types, transfer syntaxes and content negotiation for DICOMweb (PS3.18 8.7).

Real clients send many spellings of the same wish: OHIF ``type=application/octet-stream;
transfer-syntax=*`` (unquoted), dicomweb-client ``multipart/related; type="*/*"``, browsers
``*/*``. :func:`parse_accept` reads them all into :class:`MediaRange` values, best first; each
resource then picks the first representation it can produce or answers 406.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from fastapi import Request
from starlette.exceptions import HTTPException

from pacs.uids import is_valid_uid

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
NATIVE_TRANSFER_SYNTAXES = frozenset({EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"

#: The media type of a compressed frame or bulk pixel data item, by transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPE: dict[str, str] = {
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.100": "video/mpeg2",
    "1.2.840.10008.1.2.4.101": "video/mpeg2",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
}
#: Spellings of the same media type that older clients still send.
_ALIASES = {"image/x-jls": "image/jls", "image/x-dicom-rle": "image/dicom-rle", "image/jpg": "image/jpeg"}

RENDERED_TYPES = ("image/jpeg", "image/png", "image/gif")


class NotAcceptable(HTTPException):
    """No representation the client accepts can be produced (406)."""

    def __init__(self, detail: str) -> None:
        super().__init__(406, detail)


class UnsupportedMediaType(HTTPException):
    """The request body's media type is not one this resource takes (415)."""

    def __init__(self, detail: str) -> None:
        super().__init__(415, detail)


class BadRequest(HTTPException):
    """A malformed request: a bad UID, parameter or body (400)."""

    def __init__(self, detail: str) -> None:
        super().__init__(400, detail)


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One alternative of an Accept header: ``type/subtype`` plus lower-cased parameters."""

    media_type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def is_multipart(self) -> bool:
        return self.media_type == MULTIPART_RELATED

    @property
    def part_type(self) -> str:
        """The media type of each part (``type`` parameter); a bare multipart/related means any."""
        return normalize_type(self.params.get("type", "*/*")) if self.is_multipart else self.media_type

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def matches(self, concrete: str) -> bool:
        """Does this range's part type cover the concrete media type ``concrete``?"""
        return type_matches(self.part_type, concrete)


def normalize_type(value: str) -> str:
    value = value.strip().strip('"').strip().lower()
    return _ALIASES.get(value, value)


def type_matches(pattern: str, concrete: str) -> bool:
    if pattern in ("*/*", "*"):
        return True
    if pattern.endswith("/*"):
        return concrete.split("/", 1)[0] == pattern[:-2]
    return pattern == concrete


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    out.append("".join(buf))
    return out


def parse_media_type(text: str) -> MediaRange:
    """Parse ``type/subtype; name=value; ...`` (values may be quoted)."""
    pieces = _split_outside_quotes(text, ";")
    media_type = normalize_type(pieces[0])
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        value = value.strip().strip('"').strip()
        if name == "q":
            try:
                q = min(max(float(value), 0.0), 1.0)
            except ValueError:
                q = 0.0
        else:
            params[name] = value
    return MediaRange(media_type, params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The alternatives of an Accept header, best first (stable for equal q); ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(p) for p in _split_outside_quotes(header, ",") if p.strip()]
    ranges = [r for r in ranges if r.q > 0 and "/" in r.media_type]
    ranges.sort(key=lambda r: -r.q)
    return ranges


def accept_of(request: Request) -> list[MediaRange]:
    """The client's acceptable media types; the ``accept`` query parameter wins (PS3.18 8.3.3.1)."""
    query = request.query_params.getlist("accept")
    if query:
        return parse_accept(",".join(unquote(v) for v in query))
    return parse_accept(request.headers.get("accept"))


def frame_media_type(transfer_syntax_uid: str) -> str:
    """The media type a frame is sent in, stored as ``transfer_syntax_uid``."""
    return FRAME_MEDIA_TYPE.get(transfer_syntax_uid, OCTET_STREAM)


def wants_transfer_syntax(rng: MediaRange, stored: str) -> str | None:
    """What ``rng`` asks of a DICOM object stored as ``stored``: None = as stored, else a UID.

    ``transfer-syntax=*`` and no parameter both mean "as stored" (what OHIF and most clients
    expect, whatever PS3.18's nominal default); a valid UID is a request to transcode.
    """
    ts = rng.transfer_syntax
    if ts is None or ts == "*" or ts == stored:
        return None
    if not is_valid_uid(ts):
        raise BadRequest(f"transfer-syntax {ts[:70]!r} is not a UID")
    return ts


def describe(ranges: list[MediaRange]) -> str:
    shown = ", ".join(r.media_type + (f"; type={r.params['type']}" if "type" in r.params else "") for r in ranges)
    return shown[:200]
