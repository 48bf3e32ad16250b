"""Reading what the archive needs from a Part 10 object without decoding pixel data.

:func:`parse_part10` reads the header (everything before Pixel Data), then walks the pixel data
element's structure with seeks to find each frame's byte range inside the object, so a frame is
later served with one ranged read (PS3.5 A.4 for encapsulated pixel data).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from pacs.errors import NotDicom

_ITEM = 0xE000FFFE  # (FFFE,E000) read as little-endian uint32 of group,element
_SEQ_DELIM = 0xE0DDFFFE
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


@dataclass(frozen=True, slots=True)
class FrameRange:
    """Where one frame lies in the stored object.

    For encapsulated pixel data the range spans the frame's fragment items *including* their
    8-byte item headers; :func:`frame_bytes_from_range` strips them.
    """

    offset: int
    length: int


@dataclass(slots=True)
class ParsedInstance:
    """The header of one instance and the layout of its pixel data."""

    dataset: Dataset  # header only: no pixel data element; ``file_meta`` attached
    transfer_syntax_uid: str
    encapsulated: bool
    frames: list[FrameRange]  # empty when there is no pixel data or frames cannot be ranged
    pixel_vr: str | None  # VR of the pixel data element, None when absent


def parse_part10(fp: BinaryIO, size: int) -> ParsedInstance:
    """Parse a Part 10 object from a seekable stream of ``size`` bytes (PS3.10 7.1)."""
    start = fp.tell()
    head = fp.read(132)
    fp.seek(start)
    has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    if not has_preamble and not head.startswith(b"\x02\x00"):
        raise NotDicom("the data is not a DICOM Part 10 file (no DICM prefix or file meta information)")
    try:
        # Without preamble the file must start with the meta group (checked above): force only skips
        # pydicom's preamble check.
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble)
    except (InvalidDicomError, EOFError, struct.error, ValueError, KeyError, OverflowError) as exc:
        raise NotDicom(f"the data cannot be parsed as DICOM: {_short(exc)}") from exc
    except Exception as exc:  # pydicom raises a wide variety on garbage; never let it escape raw
        raise NotDicom(f"the data cannot be parsed as DICOM: {_short(exc)}") from exc
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "").rstrip("\x00 ")
    if not ts:
        raise NotDicom("the file meta information has no TransferSyntaxUID")
    pixel_pos = fp.tell()
    end = start + size
    if ts == DeflatedExplicitVRLittleEndian:
        # The dataset is one deflate stream: frames cannot be addressed by byte ranges.
        return ParsedInstance(ds, ts, False, [], _deflated_pixel_vr(fp, start, force=not has_preamble))
    explicit = not pydicom.uid.UID(ts).is_implicit_VR if ts in pydicom.uid.AllTransferSyntaxes else True
    little = pydicom.uid.UID(ts).is_little_endian if ts in pydicom.uid.AllTransferSyntaxes else True
    header_end = _check_complete(ds)
    if pixel_pos >= end - 8:
        if header_end is not None and header_end != end - start and header_end != pixel_pos - start:
            raise NotDicom("the file is truncated or has trailing bytes after its last element")
        return ParsedInstance(ds, ts, False, [], None)
    header = fp.read(12)
    order = "<" if little else ">"
    group, elem = struct.unpack(order + "HH", header[:4])
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        return ParsedInstance(ds, ts, False, [], None)
    if explicit:
        vr = header[4:6].decode("ascii", "replace")
        (length,) = struct.unpack(order + "I", header[8:12])
        value_pos = pixel_pos + 12
    else:
        vr = "OW" if tag == 0x7FE00010 and int(ds.get("BitsAllocated", 16)) > 8 else "OB"
        (length,) = struct.unpack(order + "I", header[4:8])
        value_pos = pixel_pos + 8
    if tag != 0x7FE00010:
        vr = "OF" if tag == 0x7FE00008 else "OD"
    if length == 0xFFFFFFFF:
        frames = _encapsulated_frames(fp, value_pos, end, ds)
        return ParsedInstance(ds, ts, True, frames, vr)
    if value_pos + length > end:
        raise NotDicom("the file is truncated inside the pixel data")
    return ParsedInstance(ds, ts, False, _native_frames(ds, value_pos, length, tag), vr)


def _check_complete(ds: Dataset) -> int | None:
    """Raise NotDicom when a top-level element's value was cut short (pydicom reads such files
    silently); return where the last element ends, relative to the stream start, when known."""
    last_end: int | None = None
    for tag in ds.keys():  # noqa: SIM118 - keys() avoids converting raw elements
        elem = ds.get_item(tag)
        if not isinstance(elem, RawDataElement) or elem.value_tell is None:
            continue
        value = elem.value
        if elem.length == 0xFFFFFFFF:
            elem_end = elem.value_tell + (len(value) + 8 if isinstance(value, bytes) else 0)
        else:
            if isinstance(value, bytes) and len(value) < elem.length:
                raise NotDicom(f"the file is truncated inside element {elem.tag}")
            elem_end = elem.value_tell + elem.length
        last_end = elem_end if last_end is None else max(last_end, elem_end)
    return last_end


def _native_frames(ds: Dataset, value_pos: int, length: int, tag: int) -> list[FrameRange]:
    try:
        rows = int(ds.Rows)
        cols = int(ds.Columns)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        nframes = int(ds.get("NumberOfFrames", 1) or 1)
        bits = {0x7FE00008: 32, 0x7FE00009: 64}.get(tag) or int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return []
    frame_bits = rows * cols * spp * bits
    if frame_bits % 8 or nframes < 1:
        return []  # bit-packed frames (BitsAllocated 1) do not start on byte boundaries
    frame_len = frame_bits // 8
    if frame_len * nframes > length:
        return []
    return [FrameRange(value_pos + i * frame_len, frame_len) for i in range(nframes)]


def _encapsulated_frames(fp: BinaryIO, value_pos: int, end: int, ds: Dataset) -> list[FrameRange]:
    """Walk the items of encapsulated pixel data with seeks (PS3.5 A.4) and group them into frames."""
    items: list[tuple[int, int]] = []  # (item start incl. header, value length)
    pos = value_pos
    bot: bytes = b""
    first = True
    while True:
        if pos + 8 > end:
            raise NotDicom("the file is truncated inside the encapsulated pixel data")
        fp.seek(pos)
        tag, length = struct.unpack("<II", fp.read(8))
        if tag == _SEQ_DELIM:
            break
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise NotDicom("the encapsulated pixel data is malformed (expected an item tag)")
        if pos + 8 + length > end:
            raise NotDicom("the file is truncated inside the encapsulated pixel data")
        if first:
            bot = fp.read(length) if length else b""
            first = False
        else:
            items.append((pos, length))
        pos += 8 + length
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if not items:
        return []
    first_item = items[0][0]

    def span(a: int, b: int) -> FrameRange:  # items[a:b]
        s = items[a][0]
        e = items[b - 1][0] + 8 + items[b - 1][1]
        return FrameRange(s, e - s)

    if nframes == 1:
        return [span(0, len(items))]
    if len(items) == nframes:
        return [span(i, i + 1) for i in range(nframes)]
    starts: list[int] = []
    if bot and len(bot) // 4 == nframes:
        starts = [first_item + o for o in struct.unpack(f"<{nframes}I", bot)]
    elif "ExtendedOffsetTable" in ds:
        raw = ds.ExtendedOffsetTable
        starts = [first_item + o for o in struct.unpack(f"<{len(raw) // 8}Q", raw)]
    else:
        # No offset table: a new frame starts at each fragment that begins with a codestream
        # start marker (JPEG SOI FFD8, JPEG 2000 SOC FF4F).
        for item_pos, _length in items:
            fp.seek(item_pos + 8)
            if fp.read(2) in (b"\xff\xd8", b"\xff\x4f"):
                starts.append(item_pos)
    if len(starts) != nframes:
        return []
    index = {p: i for i, (p, _l) in enumerate(items)}
    if any(s not in index for s in starts):
        return []
    bounds = [index[s] for s in starts] + [len(items)]
    return [span(bounds[i], bounds[i + 1]) for i in range(nframes)]


def frame_bytes_from_range(raw: bytes, encapsulated: bool) -> bytes:
    """The frame's codestream (or native bytes) from what a :class:`FrameRange` read returned."""
    if not encapsulated:
        return raw
    out = bytearray()
    pos = 0
    while pos + 8 <= len(raw):
        _tag, length = struct.unpack_from("<II", raw, pos)
        out += raw[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return bytes(out)


def _deflated_pixel_vr(fp: BinaryIO, start: int, *, force: bool) -> str | None:
    """The VR of a deflated dataset's pixel data element, None without one.

    The header read stopped before the pixel data, and a deflate stream cannot be searched: it is
    inflated again, converting the pixel data element only (deflated objects are rare and small).
    """
    fp.seek(start)
    try:
        ds = pydicom.dcmread(fp, force=force, specific_tags=[0x7FE00010])
    except Exception as exc:  # a damaged deflate stream
        raise NotDicom(f"the deflated data cannot be parsed: {_short(exc)}") from exc
    elem = ds.get_item(0x7FE00010)
    return str(elem.VR) if elem is not None and elem.VR else None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


_PREAMBLE = b"\x00" * 128 + b"DICM"


def file_meta_bytes(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    implementation_class_uid: str,
    implementation_version_name: str = "",
    source_ae_title: str = "",
) -> bytes:
    """Preamble, ``DICM`` and the File Meta Information group (PS3.10 7.1), explicit VR little endian.

    Encoded directly (the same bytes as pydicom's ``write_file_meta_info``, tested): it prefixes
    every dataset received over DIMSE, where pydicom's general writer cost a third of a millisecond.
    """
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _padded(sop_class_uid, b"\x00")),
        _meta_element(0x0003, b"UI", _padded(sop_instance_uid, b"\x00")),
        _meta_element(0x0010, b"UI", _padded(transfer_syntax_uid, b"\x00")),
        _meta_element(0x0012, b"UI", _padded(implementation_class_uid, b"\x00")),
    ]
    if implementation_version_name:
        elements.append(_meta_element(0x0013, b"SH", _padded(implementation_version_name, b" ")))
    if source_ae_title:
        elements.append(_meta_element(0x0016, b"AE", _padded(source_ae_title, b" ")))
    body = b"".join(elements)
    return _PREAMBLE + _meta_element(0x0000, b"UL", struct.pack("<I", len(body))) + body


def _padded(value: str, pad: bytes) -> bytes:
    """ASCII bytes of even length (PS3.5 6.2); raises ValueError for anything else or over 64 KiB."""
    data = value.encode("ascii")
    if len(data) % 2:
        data += pad
    if len(data) > 0xFFFE:
        raise ValueError("a file meta value is too long")
    return data


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":  # 4-byte length after two reserved bytes (PS3.5 7.1.2)
        return struct.pack("<HH2s2xI", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value
