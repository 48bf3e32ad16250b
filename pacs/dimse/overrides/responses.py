"""C-STORE responses encoded directly, one per received instance.

pynetdicom turns every response primitive into a DIMSE message through a pydicom Dataset
(attribute validation, UID objects, element encoding): for a C-STORE-RSP, a fixed handful of
elements, that cost about as much as decoding the request. :func:`encode_store_response` writes
the C-STORE-RSP command set (PS3.7 9.3.1.2, Implicit VR Little Endian, PS3.7 6.3.1) itself, and
:class:`pacs.dimse.overrides.provider.ArchiveDIMSE` hands pynetdicom the one P-DATA it would have built;
anything it does not recognise (other messages, an Offending Element, an observer of
``EVT_DIMSE_SENT``, a PDU too small for the command set) goes through pynetdicom unchanged. The
bytes are equal either way (tested).
"""

from __future__ import annotations

import struct

from pynetdicom.dimse_primitives import C_STORE

_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def _element(tag_element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, tag_element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def encode_store_response(rsp: C_STORE) -> bytes | None:
    """The command set of a C-STORE-RSP primitive as pynetdicom would encode it, or None when it
    holds an element this does not write (Offending Element)."""
    if rsp.MessageIDBeingRespondedTo is None or rsp.Status is None or rsp.OffendingElement is not None:
        return None
    body = b""
    if rsp.AffectedSOPClassUID is not None:
        body += _element(0x0002, _uid(str(rsp.AffectedSOPClassUID)))
    body += _element(0x0100, struct.pack("<H", _C_STORE_RSP))
    body += _element(0x0120, struct.pack("<H", int(rsp.MessageIDBeingRespondedTo)))
    body += _element(0x0800, struct.pack("<H", _NO_DATA_SET))
    body += _element(0x0900, struct.pack("<H", int(rsp.Status)))
    if rsp.ErrorComment is not None:
        body += _element(0x0902, _text(str(rsp.ErrorComment)))
    if rsp.AffectedSOPInstanceUID is not None:
        body += _element(0x1000, _uid(str(rsp.AffectedSOPInstanceUID)))
    return _element(0x0000, struct.pack("<I", len(body))) + body
