"""The DICOM JSON Model (PS3.18 F.2) of a header, written once at ingest.

:func:`header_json` converts the raw (still undecoded) elements of the common value
representations directly, sequences of defined length included, which is several times faster
than decoding every element through pydicom first; anything unusual (undefined-length sequences
and items, AT, UN, other character sets, odd lengths, big endian binary values, implicit VR without
a dictionary entry) is converted by pydicom's own ``to_json_dict``, so the output is the same either
way (tested against pydicom on its own test files, a generated corpus and fuzzed data). An
element pydicom cannot convert either (IS ``1A``) is left out of the metadata and logged, as
pydicom leaves out what it cannot convert when told to suppress invalid tags; values pydicom only
warns about are kept. The stored object keeps every element as received.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator

log = logging.getLogger(__name__)

#: Binary values longer than this many bytes become a BulkDataURI (as pydicom: threshold 1024 base64 chars).
BULK_BYTES = (1024 // 4) * 3
_STRING_VALUES = {"AS", "CS", "DA", "DT", "TM", "UI"}  # padding removed from the whole value
_TEXT_VALUES = {"SH", "LO", "UC"}  # padding removed from each value
_SINGLE_TEXT = {"ST", "LT", "UT", "UR"}
_CHARSET_VRS = {"SH", "LO", "UC", "ST", "LT", "UT", "PN"}
_BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_NUMBERS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_CODECS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 192": "utf-8", "ISO_IR 100": "latin-1"}


class _Fallback(Exception):
    """This element needs pydicom's conversion."""


def header_json(ds: Dataset, bulk_prefix: str, pixel_vr: str | None, pixel_tag: int = 0x7FE00010) -> str:
    """Compact DICOM JSON of ``ds`` (no pixel data); bulk data as ``{bulk_prefix}/bulk/{tag}``."""
    return dump(header_model(ds, bulk_prefix, pixel_vr, pixel_tag))


def dump(model: dict[str, Any]) -> str:
    """Compact JSON text of a DICOM JSON model."""
    return json.dumps(model, separators=(",", ":"), ensure_ascii=False)


def header_model(ds: Dataset, bulk_prefix: str, pixel_vr: str | None,
                 pixel_tag: int = 0x7FE00010) -> dict[str, Any]:
    """The DICOM JSON model of ``ds`` as a dict (element tag ``GGGGEEEE`` -> ``{"vr", "Value"...}``);
    the pixel data element (``pixel_tag``, of VR ``pixel_vr``) always as a BulkDataURI."""

    def handler(elem: DataElement) -> str:
        return f"{bulk_prefix}/bulk/{elem.tag:08X}"

    codec = _codec(ds)
    body: dict[str, Any] = {}
    for tag in sorted(ds.keys()):  # noqa: SIM118 - keys() avoids converting raw elements
        raw = ds.get_item(tag, keep_deferred=True)
        key = f"{tag:08X}"
        try:
            if not isinstance(raw, RawDataElement):
                raise _Fallback
            # Each raw element carries the encoding pydicom read it with (it may differ from the
            # transfer syntax's when pydicom switched to the VR encoding the data really uses).
            body[key] = _fast(raw, codec, raw.is_little_endian, handler, raw.is_implicit_VR)
        except _Fallback:
            try:
                body[key] = ds[tag].to_json_dict(handler, 1024)
            except Exception as exc:  # pydicom raises many kinds on values it cannot convert
                log.warning("element %s left out of the metadata: %s", key, exc)
    if pixel_vr is not None:
        pixel_key = f"{pixel_tag:08X}"
        body[pixel_key] = {"vr": pixel_vr, "BulkDataURI": f"{bulk_prefix}/bulk/{pixel_key}"}
    return body


def _codec(ds: Dataset) -> str | None:
    """The Python codec of the dataset's single character set, or None (let pydicom decode)."""
    elem = ds.get_item(0x00080005) if 0x00080005 in ds else None
    if elem is None:
        return "ascii"
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        terms = [t.strip(" \x00") for t in value.split("\\")]
    elif value is None:
        terms = [""]
    else:
        terms = [str(t).strip() for t in value]
    return _CODECS.get(terms[0]) if len(terms) == 1 else None


def _fast(raw: RawDataElement, codec: str | None, little: bool, handler: Any, implicit: bool) -> dict[str, Any]:
    vr = raw.VR
    if vr == "UN":  # pydicom gives a known attribute its dictionary VR (and a sequence its items)
        raise _Fallback
    if vr is None:
        if raw.tag >> 16 & 1:  # private, implicit VR: only pydicom knows what to do
            raise _Fallback
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError as exc:
            raise _Fallback from exc
    value = raw.value
    if value is None or not isinstance(value, bytes):
        raise _Fallback
    if vr == "SQ":
        return {"vr": "SQ", "Value": _items(value, codec, little, handler, implicit)}
    out: dict[str, Any] = {"vr": vr}
    if not value:
        return out
    if vr in _BINARY:
        if len(value) > BULK_BYTES:
            out["BulkDataURI"] = handler(_Named(raw.tag))
        else:
            out["InlineBinary"] = base64.b64encode(value).decode("ascii")
        return out
    if vr in _NUMBERS:
        if not little:
            raise _Fallback
        fmt = _NUMBERS[vr]
        size = struct.calcsize(fmt)
        if len(value) % size:
            raise _Fallback
        out["Value"] = list(struct.unpack(f"<{len(value) // size}{fmt}", value))
        return out
    if vr in _CHARSET_VRS and codec is None:
        raise _Fallback
    try:
        text = value.decode(codec if vr in _CHARSET_VRS and codec else "ascii")
    except UnicodeDecodeError as exc:
        raise _Fallback from exc
    if "\x1b" in text:  # ISO 2022 escape sequences
        raise _Fallback
    # Padding is removed as pydicom's converters remove it, VR by VR (pydicom.values).
    if vr in _SINGLE_TEXT:
        text = text.rstrip() if vr == "UR" else text.rstrip("\x00 ")
        if text:
            out["Value"] = [text]
        return out
    if vr == "PN":
        names = []
        for part in text.rstrip("\x00 ").split("\\"):
            part = part.rstrip(" ")
            if not part:
                raise _Fallback
            groups = part.split("=")
            name = {"Alphabetic": groups[0]}
            if len(groups) > 1:
                name["Ideographic"] = groups[1]
            if len(groups) > 2:
                name["Phonetic"] = groups[2]
            names.append(name)
        out["Value"] = names
        return out
    if vr in ("DS", "IS"):
        numbers: list[Any] = []
        for part in text.strip().rstrip("\x00 ").split("\\"):
            part = part.strip()
            if not part:
                raise _Fallback
            try:
                numbers.append(int(part) if vr == "IS" else float(part))
            except ValueError as exc:
                raise _Fallback from exc
        out["Value"] = numbers
        return out
    if vr == "AE":
        values = [p.strip() for p in text.split("\\")]
    elif vr in _TEXT_VALUES:
        values = [p.rstrip("\x00 ") for p in text.split("\\")]
    elif vr in _STRING_VALUES:
        values = text.rstrip(" \x00").split("\\")
    else:
        raise _Fallback
    if len(values) > 1 and not all(values):
        raise _Fallback
    if values != [""]:
        out["Value"] = values
    return out


_ITEM = (0xFFFE, 0xE000)


def _items(value: bytes, codec: str | None, little: bool, handler: Any, implicit: bool) -> list[dict[str, Any]]:
    """The items of a defined-length sequence value, each converted element by element (PS3.5 7.5)."""
    order = "<" if little else ">"
    items: list[dict[str, Any]] = []
    pos, end = 0, len(value)
    while pos < end:
        if pos + 8 > end:
            raise _Fallback
        group, element, length = struct.unpack_from(order + "HHI", value, pos)
        if (group, element) != _ITEM or length == 0xFFFFFFFF or pos + 8 + length > end:
            raise _Fallback  # undefined-length items, delimiters, damage: pydicom decides
        item: dict[str, Any] = {}
        for elem in data_element_generator(io.BytesIO(value[pos + 8 : pos + 8 + length]), implicit, little):
            if not isinstance(elem, RawDataElement) or elem.tag == 0x00080005:
                raise _Fallback  # nested sequences of undefined length; an item's own character set
            item[f"{elem.tag:08X}"] = _fast(elem, codec, little, handler, implicit)
        items.append(item)
        pos += 8 + length
    return items


class _Named:
    """The one attribute the bulk data handler reads from an element."""

    __slots__ = ("tag",)

    def __init__(self, tag: int) -> None:
        self.tag = tag
