"""Reading what the archive needs from a Part 10 object without decoding pixel data.

:func:`parse_part10` reads the header (everything before Pixel Data) with pydicom, makes sure the
data is complete, then walks the pixel data element's structure with seeks to find each frame's
byte range inside the object, so a frame is later served with one ranged read (PS3.5 A.4 for
encapsulated pixel data). Whatever pydicom reads is accepted as long as nothing is cut short: the
elements after the pixel data (rare) are read by pydicom as well, and pixel data that cannot hold
the frames its header announces is reported (:attr:`ParsedInstance.pixel_problem`) for ingest to
refuse. :func:`bare_dataset_identity` reads a data set that comes without File Meta Information,
detecting its transfer syntax the way DCMTK does.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO, cast

import pydicom
from pydicom.datadict import get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pacs.errors import NotDicom
from pacs.uids import is_valid_uid, require_uid

_ITEM = 0xE000FFFE  # (FFFE,E000) read as little-endian uint32 of group,element
_SEQ_DELIM = 0xE0DDFFFE
PIXEL_DATA = 0x7FE00010
_PIXEL_TAGS = {PIXEL_DATA: None, 0x7FE00008: "OF", 0x7FE00009: "OD"}  # tag -> VR when not Pixel Data
_FLOAT_BITS = {0x7FE00008: 32, 0x7FE00009: 64}
_ITEM_DELIM_TAG = 0xFFFEE00D  # at the top level, pydicom stops reading there
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}  # PS3.5 7.1.2
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
        b"SS", b"ST", b"TM", b"UI", b"UL", b"US"} | _LONG_VRS
#: Photometric interpretations whose native pixel data holds two samples per pixel (PS3.3 C.7.6.3.1.2).
_SUBSAMPLED = {"YBR_FULL_422", "YBR_PARTIAL_422"}
_NOT_PART10 = "the data is not a DICOM Part 10 file (no DICM prefix or file meta information)"


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

    dataset: Dataset  # every element but the pixel data; ``file_meta`` attached
    transfer_syntax_uid: str
    encapsulated: bool
    frames: list[FrameRange]  # empty when there is no pixel data or frames cannot be ranged
    pixel_vr: str | None  # VR of the pixel data element, None when absent
    pixel_tag: int = PIXEL_DATA  # Pixel Data, Float Pixel Data or Double Float Pixel Data
    #: Why the pixel data cannot hold the frames the header announces (shorter than Rows x Columns x
    #: samples x bits x frames, no fragments, fewer fragments than frames); None when it can or
    #: when the header says too little to tell.
    pixel_problem: str | None = None
    #: The data ends with fewer bytes than an element header after its last element: junk that
    #: pydicom skips, or a file cut inside an element header (ingest says so if attributes are missing).
    partial_tail: bool = False


def parse_part10(fp: BinaryIO, size: int) -> ParsedInstance:
    """Parse a Part 10 object from a seekable stream of ``size`` bytes (PS3.10 7.1)."""
    start = fp.tell()
    end = start + size
    head = fp.read(132)
    fp.seek(start)
    has_preamble = len(head) >= 132 and head[128:132] == b"DICM"
    if not has_preamble and not head.startswith(b"\x02\x00"):
        raise NotDicom(_NOT_PART10)
    if not isinstance(fp, io.BytesIO):
        fp = cast(BinaryIO, _Bounded(fp, end))  # a damaged length never makes a file reader allocate gigabytes
    try:
        # Without preamble the file must start with the meta group (checked above): force only skips
        # pydicom's preamble check.
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble)
    except Exception as exc:  # pydicom raises a wide variety on damaged data; never let it escape raw
        raise NotDicom(f"the data cannot be parsed as DICOM: {_short(exc)}") from exc
    implicit, little = _encoding(ds)
    ts = _transfer_syntax(ds, implicit, little)
    if ts == DeflatedExplicitVRLittleEndian:
        return _parse_deflated(fp, start, ts, force=not has_preamble)
    pixel_pos = fp.tell()
    last_end = _check_complete(ds, end)
    if end - pixel_pos < 8:  # no pixel data; fewer than 8 bytes left are no element (pydicom ignores them too)
        return ParsedInstance(ds, ts, False, [], None, partial_tail=last_end is not None and last_end < end)
    order = "<" if little else ">"
    header = fp.read(12)
    group, elem = struct.unpack(order + "HH", header[:4])
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        if _after_item_delimiter(fp, pixel_pos, order):  # pydicom stops reading there: so does the archive
            return ParsedInstance(ds, ts, False, [], None)
        raise NotDicom(f"the data cannot be parsed after byte {pixel_pos - start}: it is truncated or damaged")
    vr, length, value_pos = _pixel_header(header, order, implicit, pixel_pos, tag, ds)
    after: int | None
    if length == 0xFFFFFFFF:
        if _meta_transfer_syntax(ds) is None:
            raise NotDicom("the file meta information has no TransferSyntaxUID and the pixel data is compressed")
        frames, problem, after = _encapsulated_layout(fp, value_pos, end, ds)
        parsed = ParsedInstance(ds, ts, True, frames, vr, tag, problem)
    else:
        if value_pos + length > end:
            raise NotDicom("the file is truncated inside the pixel data")
        frames, problem = _native_layout(ds, value_pos, length, tag)
        parsed = ParsedInstance(ds, ts, False, frames, vr, tag, problem)
        after = value_pos + length
    if after is not None and end - after >= 8:
        _read_trailing(fp, after, end, ds, implicit, little)
    return parsed


def _encoding(ds: Dataset) -> tuple[bool, bool]:
    """(implicit VR, little endian) of the data set as pydicom found it: it may differ from what the
    transfer syntax says (pydicom switches when the first element shows the other VR encoding)."""
    for tag in ds.keys():  # noqa: SIM118 - keys() avoids converting raw elements
        elem = ds.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement) and tag >> 16 not in (0x0000, 0x0002):
            return bool(elem.is_implicit_VR), bool(elem.is_little_endian)
    implicit, little = ds.original_encoding[:2]
    return bool(implicit), little is not False


def _meta_transfer_syntax(ds: Dataset) -> str | None:
    try:
        value = ds.file_meta.get("TransferSyntaxUID")
    except Exception as exc:  # a damaged value pydicom cannot convert
        raise NotDicom(f"the TransferSyntaxUID cannot be read: {_short(exc)}") from exc
    text = str(value or "").rstrip("\x00 ")
    return text or None


def _transfer_syntax(ds: Dataset, implicit: bool, little: bool) -> str:
    """The file's transfer syntax; without one in the File Meta Information (pydicom reads such files
    by looking at the data), the uncompressed transfer syntax the data set is encoded in."""
    ts = _meta_transfer_syntax(ds)
    if ts is None:
        return str(ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if not is_valid_uid(ts):
        shown = ts if len(ts) <= 80 else ts[:77] + "..."
        raise NotDicom(f"the TransferSyntaxUID {shown!r} is not a valid UID")
    return ts


def _parse_deflated(fp: BinaryIO, start: int, ts: str, *, force: bool) -> ParsedInstance:
    """A deflated data set (PS3.5 A.5) is one deflate stream: it is read whole (pixel data included,
    deflated objects are rare and small) and its frames cannot be addressed by byte ranges."""
    fp.seek(start)
    try:
        ds = pydicom.dcmread(fp, force=force)
    except Exception as exc:  # a damaged deflate stream
        raise NotDicom(f"the deflated data cannot be parsed: {_short(exc)}") from exc
    for tag, fixed_vr in _PIXEL_TAGS.items():
        elem = ds.get_item(tag, keep_deferred=True)
        if elem is None:
            continue
        del ds[tag]
        value = elem.value
        problem = _native_layout(ds, 0, len(value), tag)[1] if isinstance(value, bytes) else None
        return ParsedInstance(ds, ts, False, [], fixed_vr or str(elem.VR or "OW"), tag, problem)
    return ParsedInstance(ds, ts, False, [], None)


def _check_complete(ds: Dataset, end: int) -> int | None:
    """Raise NotDicom when the last element's value is cut short: pydicom reads such data silently.
    Returns where the last element ends, None when that is not known (an undefined length).

    Only the element that ends the data can be cut (every earlier one was followed by more data);
    an undefined-length sequence pydicom returned was closed by its delimiter, or pydicom had raised.
    """
    last: RawDataElement | DataElement | None = None
    last_pos = -1
    for tag in ds.keys():  # noqa: SIM118 - keys() avoids converting raw elements
        elem = ds.get_item(tag, keep_deferred=True)
        pos = elem.value_tell if isinstance(elem, RawDataElement) else elem.file_tell
        if pos is not None and pos > last_pos:
            last, last_pos = elem, pos
    if not isinstance(last, RawDataElement) or last.length == 0xFFFFFFFF:
        return None
    if last_pos + last.length > end:
        raise NotDicom(f"the file is truncated inside element {last.tag}")
    return int(last_pos + last.length)


def _after_item_delimiter(fp: BinaryIO, pos: int, order: str) -> bool:
    """Whether the 8 bytes before ``pos`` are an Item Delimitation Item, where pydicom stops a data set."""
    if pos < 8:
        return False
    fp.seek(pos - 8)
    group, elem = struct.unpack(order + "HH", fp.read(4))
    return (group << 16 | elem) == _ITEM_DELIM_TAG


def _pixel_header(header: bytes, order: str, implicit: bool, pixel_pos: int, tag: int,
                  ds: Dataset) -> tuple[str, int, int]:
    """(VR, value length, value position) of the pixel data element, read as pydicom reads it."""
    if not implicit:
        raw_vr = header[4:6]
        if raw_vr in _LONG_VRS:
            if len(header) < 12:
                raise NotDicom("the file is truncated inside the pixel data")
            return raw_vr.decode("ascii"), struct.unpack(order + "I", header[8:12])[0], pixel_pos + 12
        if b"AA" <= raw_vr <= b"ZZ":
            return raw_vr.decode("ascii"), struct.unpack(order + "H", header[6:8])[0], pixel_pos + 8
    (length,) = struct.unpack(order + "I", header[4:8])  # implicit VR, or pydicom's switch to it
    fixed = _PIXEL_TAGS[tag]
    if fixed is not None:
        return fixed, length, pixel_pos + 8
    if length == 0xFFFFFFFF:
        return "OB", length, pixel_pos + 8
    if implicit:
        return "OW", length, pixel_pos + 8  # PS3.5 A.1
    return ("OW" if (_int_or_none(ds, "BitsAllocated") or 16) > 8 else "OB"), length, pixel_pos + 8


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    """An integer attribute, None when absent or not a single integer (pydicom converts on access)."""
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:  # a damaged value: pydicom's conversions raise many kinds
        return None


def _native_layout(ds: Dataset, value_pos: int, length: int, tag: int) -> tuple[list[FrameRange], str | None]:
    """Frame ranges of native pixel data, or why the value is too short for its frames (PS3.5 8.1.1)."""
    rows, cols = _int_or_none(ds, "Rows"), _int_or_none(ds, "Columns")
    bits = _FLOAT_BITS.get(tag) or _int_or_none(ds, "BitsAllocated")
    samples = _int_or_none(ds, "SamplesPerPixel") or 1
    if not rows or not cols or not bits or rows < 0 or cols < 0 or bits < 0 or samples < 0:
        return [], None  # the header says too little to tell
    try:
        photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    except Exception:
        photometric = ""
    if photometric in _SUBSAMPLED:
        samples = 2  # Y Y Cb Cr for every two pixels
    declared = _int_or_none(ds, "NumberOfFrames")
    nframes = declared if declared is not None and declared > 0 else 1
    frame_bits = rows * cols * samples * bits
    needed = (frame_bits * nframes + 7) // 8
    if length < needed:
        return [], (f"the pixel data holds {length} bytes where Rows {rows} x Columns {cols} x {samples} "
                    f"samples x {bits} bits x {nframes} frames need {needed}")
    if frame_bits % 8:
        return [], None  # bit-packed frames (BitsAllocated 1) do not start on byte boundaries
    frame_len = frame_bits // 8
    return [FrameRange(value_pos + i * frame_len, frame_len) for i in range(nframes)], None


def _encapsulated_layout(fp: BinaryIO, value_pos: int, end: int,
                         ds: Dataset) -> tuple[list[FrameRange], str | None, int | None]:
    """Walk the items of encapsulated pixel data with seeks (PS3.5 A.4) and group them into frames.

    Returns the frames, why the items cannot hold the frames (if so) and where the element ends
    (None when its items are malformed).
    """
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
            return [], f"the encapsulated pixel data is malformed (no item tag at byte {pos})", None
        if pos + 8 + length > end:
            raise NotDicom("the file is truncated inside the encapsulated pixel data")
        if first:
            bot = fp.read(length) if length else b""
            first = False
        else:
            items.append((pos, length))
        pos += 8 + length
    after = pos + 8
    declared = _int_or_none(ds, "NumberOfFrames")
    nframes = declared if declared is not None and declared > 0 else 1
    if not items:
        return [], "the encapsulated pixel data has no fragments", after
    if len(items) < nframes:
        return [], f"the encapsulated pixel data has {len(items)} fragments for {nframes} frames", after
    return _group_frames(fp, items, bot, nframes, ds), None, after


def _group_frames(fp: BinaryIO, items: list[tuple[int, int]], bot: bytes, nframes: int,
                  ds: Dataset) -> list[FrameRange]:
    """The fragments of each frame: one per frame, or as the offset tables or codestream markers say."""

    def span(a: int, b: int) -> FrameRange:  # items[a:b]
        s = items[a][0]
        e = items[b - 1][0] + 8 + items[b - 1][1]
        return FrameRange(s, e - s)

    if nframes == 1:
        return [span(0, len(items))]
    if len(items) == nframes:
        return [span(i, i + 1) for i in range(nframes)]
    first_item = items[0][0]
    starts: list[int] = []
    if len(bot) // 4 == nframes:
        starts = [first_item + o for o in struct.unpack(f"<{nframes}I", bot[: 4 * nframes])]
    elif (eot := _extended_offsets(ds)) is not None:
        starts = [first_item + o for o in eot]
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
    if any(b >= c for b, c in zip(bounds, bounds[1:], strict=False)):
        return []
    return [span(bounds[i], bounds[i + 1]) for i in range(nframes)]


def _extended_offsets(ds: Dataset) -> tuple[int, ...] | None:
    """The Extended Offset Table (7FE0,0001), None when absent or unreadable."""
    try:
        raw = ds.get("ExtendedOffsetTable")
    except Exception:
        return None
    if not isinstance(raw, bytes) or not raw:
        return None
    return struct.unpack(f"<{len(raw) // 8}Q", raw[: len(raw) // 8 * 8])


def _read_trailing(fp: BinaryIO, after: int, end: int, ds: Dataset, implicit: bool, little: bool) -> None:
    """Add the elements that follow the pixel data (trailing padding, private groups, signatures) to
    ``ds``, as pydicom's full read has them (PS3.5 7.1: elements come in tag order, but some don't)."""
    fp.seek(after)
    try:
        tail = read_dataset(fp, implicit, little, parent_encoding=ds.original_character_set)
    except Exception as exc:
        raise NotDicom(f"the data after the pixel data cannot be parsed: {_short(exc)}") from exc
    stopped = fp.tell()
    if end - stopped >= 8 and not _after_item_delimiter(fp, stopped, "<" if little else ">"):
        raise NotDicom(f"the data cannot be parsed after byte {stopped}: it is truncated or damaged")
    _check_complete(tail, end)
    for tag in tail.keys():  # noqa: SIM118 - keys() avoids converting raw elements
        ds[tag] = tail.get_item(tag, keep_deferred=True)


def bare_dataset_identity(fp: BinaryIO, size: int) -> tuple[str, str, str]:
    """SOP Class UID, SOP Instance UID and transfer syntax of a data set without File Meta
    Information (what DIMSE carries, and what some archives write to disk), for building its meta.

    The transfer syntax is judged from the first element as DCMTK does (``DcmItem::
    checkTransferSyntax``); compressed pixel data cannot be told apart, so such data is refused.
    """
    start = fp.tell()
    ts = detect_transfer_syntax(fp.read(8))
    fp.seek(start)
    try:
        ds = read_dataset(fp, ts.is_implicit_VR, ts.is_little_endian,
                          stop_when=lambda tag, vr, length: tag in _PIXEL_TAGS)
    except Exception as exc:
        raise NotDicom(f"the data set cannot be parsed: {_short(exc)}") from exc
    pos = fp.tell()
    if start + size - pos >= 8:
        header = fp.read(12)
        order = "<" if ts.is_little_endian else ">"
        group, elem = struct.unpack(order + "HH", header[:4])
        tag = group << 16 | elem
        if tag in _PIXEL_TAGS and _pixel_header(header, order, ts.is_implicit_VR, pos, tag, ds)[1] == 0xFFFFFFFF:
            raise NotDicom("the data set has no File Meta Information and its pixel data is compressed: "
                           "its transfer syntax cannot be known")
    try:
        sop_class, sop_instance = ds.get("SOPClassUID"), ds.get("SOPInstanceUID")
    except Exception as exc:
        raise NotDicom(f"the data set cannot be parsed: {_short(exc)}") from exc
    return require_uid(sop_class, "SOPClassUID"), require_uid(sop_instance, "SOPInstanceUID"), str(ts)


def detect_transfer_syntax(head: bytes) -> UID:
    """The transfer syntax of a data set without File Meta Information, from its first 6 bytes.

    As DCMTK decides: a VR name in bytes 4-5 means explicit VR; the byte order is the one whose
    reading of the first tag is a known attribute, little endian when both are (unless only the
    big endian reading has a group below 0x0100). Unlike DCMTK, data whose first tag is known in
    neither order is not taken for DICOM.
    """
    if len(head) < 8:
        raise NotDicom(_NOT_PART10)
    le_group, le_elem = struct.unpack("<HH", head[:4])
    be_group, be_elem = struct.unpack(">HH", head[:4])
    le_known, be_known = _known_tag(le_group, le_elem), _known_tag(be_group, be_elem)
    if not le_known and not be_known:
        raise NotDicom(_NOT_PART10 + " nor a DICOM data set")
    big = not le_known or (be_known and le_group > 0xFF and be_group <= 0xFF)
    explicit = head[4:6] in _VRS
    if big and not explicit:
        raise NotDicom("the data set is encoded in implicit VR big endian, which is no DICOM transfer syntax")
    return ExplicitVRBigEndian if big else ExplicitVRLittleEndian if explicit else ImplicitVRLittleEndian


def _known_tag(group: int, elem: int) -> bool:
    """A group length, a private creator or an attribute of the data dictionary (what DCMTK knows)."""
    if group in (0x0000, 0x0002, 0xFFFE):  # command and meta groups, item tags: no data set starts so
        return False
    if elem == 0 or (group & 1 and 0x10 <= elem <= 0xFF):
        return True
    try:
        get_entry(group << 16 | elem)
    except KeyError:
        return False
    return True


def dataset_offset(data: bytes) -> int:
    """Where the data set starts in a Part 10 object: after the preamble, ``DICM`` and the File Meta
    Information group (PS3.10 7.1), each element walked (its group length is often wrong); 0 for a
    data set without them. ``data`` needs to hold the meta group only."""
    pos = 132 if data[128:132] == b"DICM" else 0
    size = len(data)
    while pos < size and data[pos:pos + 2] in (b"\x02\x00", b"\x02"):
        if pos + 12 > size:
            return size
        if data[pos + 4:pos + 6] in _LONG_VRS:
            pos += 12 + struct.unpack_from("<I", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return min(pos, size)


class _Bounded:
    """A stream whose reads stop at ``end``: pydicom reads a value with one ``read(length)``, and a
    file reader allocates what it is asked for before reading."""

    def __init__(self, fp: BinaryIO, end: int) -> None:
        self._fp = fp
        self._end = end

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            return self._fp.read()
        return self._fp.read(max(0, min(n, self._end - self._fp.tell())))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


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
