"""Pixel data of one frame: read (one ranged read), decoded with pydicom's decoders, as numpy.

Frames, rendered images and WADO-URI all decode here. The image description (rows, bits,
photometric...) comes from the instance's DICOM JSON in the index; only the frame's bytes are
read from the object store, unless the object's frames cannot be addressed by range (deflated or
bit-packed), in which case the whole object is read once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import pack_bits

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import InvalidDataset, NotFound
from pacs.retrieve import StoredInstance, find_instances, instance_metadata, open_instance, read_frames
from viewer_api.dicomweb.media import EXPLICIT_VR_BIG_ENDIAN, NATIVE_TRANSFER_SYNTAXES

log = logging.getLogger(__name__)
PIXEL_DATA_TAG = "7FE00010"
_CACHED_HEADERS = 512
_HEADERS: OrderedDict[str, Dataset] = OrderedDict()
_CACHE_LOCK = threading.Lock()


class CannotDecode(InvalidDataset):
    """The frame is encoded in a way no installed decoder reads."""


@dataclass(slots=True)
class Image:
    """One stored instance ready to have frames decoded: where it is and its header."""

    stored: StoredInstance
    header: Dataset

    @property
    def frame_count(self) -> int:
        return frame_count(self.stored)

    @property
    def has_pixels(self) -> bool:
        return frame_count(self.stored) > 0


def frame_count(stored: StoredInstance) -> int:
    """Frames of an image (0: not an image). An image whose pixel data the index could not see
    (a deflated object) still has Rows: it counts as one frame, decoded from the whole object."""
    if stored.rows is None:
        return 0
    return stored.number_of_frames or 1


def check_frames(stored: StoredInstance, numbers: list[int]) -> None:
    """NotFound unless every frame number exists in ``stored``."""
    count = frame_count(stored)
    if not count:
        raise NotFound("the instance has no pixel data")
    for n in numbers:
        if not 1 <= n <= count:
            raise NotFound(f"frame {n} does not exist (the instance has {count})")


def locate(archive: Archive, scope: AccessScope, study: str, series: str, sop: str) -> StoredInstance:
    """The one visible instance with these UIDs (NotFound otherwise)."""
    return find_instances(archive.engine, scope, study_uid=study, series_uid=series, sop_uid=sop)[0]


def load_image(archive: Archive, scope: AccessScope, stored: StoredInstance) -> Image:
    """The header of ``stored`` from the index; bulk elements other than pixel data read on demand.

    Headers are cached by content hash: a stored object never changes under its hash, and
    building a Dataset from JSON costs more than decoding a small frame.
    """
    key = f"{stored.sop_uid}:{stored.sha256}"
    with _CACHE_LOCK:
        header = _HEADERS.get(key)
        if header is not None:
            _HEADERS.move_to_end(key)
            return Image(stored, header)
    text = instance_metadata(archive.engine, scope, study_uid=stored.study_uid, series_uid=stored.series_uid,
                             sop_uid=stored.sop_uid)[0]  # fmt: skip
    header = header_from_json(archive, stored, text)
    with _CACHE_LOCK:
        _HEADERS[key] = header
        while len(_HEADERS) > _CACHED_HEADERS:
            _HEADERS.popitem(last=False)
    return Image(stored, header)


def header_from_json(archive: Archive, stored: StoredInstance, text: str) -> Dataset:
    body: dict[str, Any] = json.loads(text)
    body.pop(PIXEL_DATA_TAG, None)
    cache: dict[str, Dataset] = {}

    def bulk(tag: str, _vr: str, _uri: str) -> bytes:
        # Large header elements (e.g. 16-bit palette LUTs) are kept as BulkDataURIs in the index.
        if "ds" not in cache:
            with open_instance(archive.store, stored) as fh:
                cache["ds"] = pydicom.dcmread(fh, stop_before_pixels=True)
        wanted = int(tag, 16)
        for elem in cache["ds"].iterall():
            if elem.tag == wanted:
                value = elem.value
                return value if isinstance(value, bytes) else b""
        return b""

    return Dataset.from_json(body, bulk_data_uri_handler=bulk)


def decodable(transfer_syntax_uid: str) -> bool:
    """Can the frames of this transfer syntax be decoded here?"""
    if transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES:
        return True
    try:
        return bool(get_decoder(transfer_syntax_uid).is_available)
    except (NotImplementedError, ValueError):
        return False


def _options(header: Dataset) -> dict[str, Any]:
    try:
        opts: dict[str, Any] = {
            "rows": int(header.Rows),
            "columns": int(header.Columns),
            "samples_per_pixel": int(header.get("SamplesPerPixel", 1) or 1),
            "bits_allocated": int(header.BitsAllocated),
            "bits_stored": int(header.get("BitsStored", header.BitsAllocated)),
            "pixel_representation": int(header.get("PixelRepresentation", 0) or 0),
            "photometric_interpretation": str(header.get("PhotometricInterpretation", "MONOCHROME2")),
            "number_of_frames": 1,
            "pixel_keyword": "PixelData",
        }
    except (AttributeError, TypeError, ValueError) as exc:
        raise CannotDecode("the image description (Rows, Columns, BitsAllocated) is missing or invalid") from exc
    if opts["samples_per_pixel"] > 1:
        opts["planar_configuration"] = int(header.get("PlanarConfiguration", 0) or 0)
    return opts


def decode(header: Dataset, transfer_syntax_uid: str, data: bytes, *, as_rgb: bool = True) -> np.ndarray:
    """One frame's native bytes or codestream as an array (rows, cols[, samples])."""
    if not decodable(transfer_syntax_uid):
        raise CannotDecode(f"no decoder for transfer syntax {transfer_syntax_uid} is installed")
    src = data if transfer_syntax_uid in NATIVE_TRANSFER_SYNTAXES else encapsulate([data])
    try:
        arr, _meta = get_decoder(transfer_syntax_uid).as_array(src, index=0, raw=not as_rgb, **_options(header))
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise CannotDecode(f"the frame cannot be decoded: {str(exc)[:120]}") from exc
    return arr


def frame_array(archive: Archive, image: Image, number: int, *, as_rgb: bool = True) -> np.ndarray:
    """Frame ``number`` (1-based) decoded."""
    stored = image.stored
    check_frames(stored, [number])
    if stored.frames:
        data = read_frames(archive.store, stored, [number])[0]
        return decode(image.header, stored.transfer_syntax_uid, data, as_rgb=as_rgb)
    return _from_whole_object(archive, stored, number, as_rgb=as_rgb)


def _from_whole_object(archive: Archive, stored: StoredInstance, number: int, *, as_rgb: bool) -> np.ndarray:
    return frames_from_whole_object(archive, stored, [number], as_rgb=as_rgb)[0]


def frames_from_whole_object(archive: Archive, stored: StoredInstance, numbers: Sequence[int], *,
                             as_rgb: bool = True) -> list[np.ndarray]:
    """Frames of an object whose frames cannot be read by range (bit-packed, deflated), read once."""
    check_frames(stored, numbers)
    with open_instance(archive.store, stored) as fh:
        ds = pydicom.dcmread(fh)
    if "PixelData" not in ds:
        raise NotFound("the instance has no pixel data")
    try:
        from pydicom.pixels import pixel_array

        return [pixel_array(ds, index=n - 1, raw=not as_rgb) for n in numbers]
    except (ValueError, RuntimeError, AttributeError, NotImplementedError) as exc:
        raise CannotDecode(f"the frame cannot be decoded: {str(exc)[:120]}") from exc


def native_bytes(header: Dataset, arr: np.ndarray) -> bytes:
    """A decoded frame as Explicit VR Little Endian pixel bytes (PS3.5 8.1.1)."""
    bits = int(header.BitsAllocated)
    if bits == 1:
        return pack_bits(arr.ravel(), pad=False)
    signed = int(header.get("PixelRepresentation", 0) or 0) == 1
    dtype = {8: "u1", 16: "u2", 32: "u4", 64: "u8"}.get(bits)
    if dtype is None:
        raise CannotDecode(f"BitsAllocated {bits} cannot be written natively")
    if signed:
        dtype = dtype.replace("u", "i")
    return np.ascontiguousarray(arr).astype("<" + dtype, copy=False).tobytes()


def native_from_stored(header: Dataset, transfer_syntax_uid: str, data: bytes) -> bytes:
    """Native frame bytes as stored, made little endian when the object is big endian."""
    if transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN:
        return data
    bits = int(header.get("BitsAllocated", 8) or 8)
    if bits <= 8:
        return data
    return np.frombuffer(data, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
