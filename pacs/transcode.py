"""Re-encode a stored Part 10 object as Explicit or Implicit VR Little Endian for peers that need it.

Used where a receiver cannot take the stored transfer syntax: C-MOVE/C-GET destinations that
accept only uncompressed little endian (PS3.4 C.4.2.3), and DICOMweb clients that ask for
``transfer-syntax=1.2.840.10008.1.2.1``. Compressed pixel data is decoded with pydicom's plugins
(pylibjpeg, pyjpegls); big endian words are swapped (PS3.5 7.3). Everything else is kept, including
the SOP Instance UID: a lossless re-encoding is the same instance (PS3.4 C.4.2.3.1), and a lossy
original stays marked by its Lossy Image Compression attributes.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pacs.errors import Conflict, NotDicom

#: The transfer syntaxes :func:`to_transfer_syntax` can produce.
TARGETS: frozenset[UID] = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_WORD_WIDTH = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def to_transfer_syntax(part10: bytes, target_ts: str) -> bytes:
    """``part10`` re-encoded in ``target_ts`` (Explicit or Implicit VR Little Endian).

    Returns ``part10`` itself when it is already in ``target_ts``. Raises :class:`Conflict` when
    the target is not one of :data:`TARGETS` or the pixel data cannot be decoded here, and
    :class:`NotDicom` when ``part10`` cannot be parsed.
    """
    target = UID(target_ts)
    if target not in TARGETS:
        raise Conflict(f"cannot transcode to {target.name or target}: only to Explicit or Implicit VR Little Endian")
    try:
        ds = pydicom.dcmread(io.BytesIO(part10))
    except (InvalidDicomError, EOFError, ValueError, KeyError) as exc:
        raise NotDicom(f"the stored object cannot be parsed: {exc}") from exc
    source = UID(str(ds.file_meta.TransferSyntaxUID))
    if source == target:
        return part10
    if source.is_compressed:
        _decompress(ds, source)
    elif source == ExplicitVRBigEndian:
        _swap_words(ds)
    elif source not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        raise Conflict(f"cannot transcode from {source.name or source}: unknown transfer syntax")
    ds.file_meta.TransferSyntaxUID = target
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _decompress(ds: Dataset, source: UID) -> None:
    try:
        ds.decompress(generate_instance_uid=False)
    except (RuntimeError, ValueError, NotImplementedError, TypeError, AttributeError) as exc:
        raise Conflict(f"cannot decompress {source.name or source} pixel data: {exc}") from exc


def _swap_words(ds: Dataset) -> None:
    """Byte-swap the raw values of OW/OL/OF/OD/OV elements, which pydicom writes as they are."""
    for elem in ds.iterall():
        width = _WORD_WIDTH.get(str(elem.VR))
        if width and isinstance(elem.value, bytes) and not elem.is_undefined_length:
            usable = len(elem.value) - len(elem.value) % width
            swapped = np.frombuffer(elem.value[:usable], dtype=f">u{width}").astype(f"<u{width}").tobytes()
            elem.value = swapped + elem.value[usable:]
