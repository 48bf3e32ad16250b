"""Rewriting one stored object with corrected attribute values, everything else kept as it was.

The object is read whole with pydicom and written back in its own transfer syntax behind its own
File Meta Information: pixel data (native or encapsulated) is copied byte for byte, never decoded.
A new value that the object's character set cannot hold switches it to UTF-8 (``ISO_IR 192``),
after every text element was decoded with the old one, so nothing else changes meaning.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import pydicom
from pydicom.dataset import Dataset

from pacs.errors import InvalidDataset

#: The attributes a correction may set (PS3.3 C.7.1.1 Patient, C.7.2.1 General Study).
PATIENT_ATTRIBUTES = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_ATTRIBUTES = ("AccessionNumber", "StudyDescription")
CORRECTABLE = frozenset(PATIENT_ATTRIBUTES + STUDY_ATTRIBUTES)
_UTF8 = "ISO_IR 192"


def rewrite(data: bytes, values: Mapping[str, str]) -> bytes:
    """``data`` (a Part 10 object) with ``values`` (keyword → DICOM text; "" empties the attribute)."""
    unknown = set(values) - CORRECTABLE
    if unknown:
        raise InvalidDataset(f"{sorted(unknown)[0]} is not an attribute a correction may change")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many kinds on a damaged object
        raise InvalidDataset(f"the stored object cannot be read: {exc}") from exc
    if any(not v.isascii() for v in values.values()) and not _holds_utf8(ds):
        for _element in ds.iterall():  # decode every text value with the old character set first
            pass
        ds.SpecificCharacterSet = _UTF8
    for keyword, value in values.items():
        setattr(ds, keyword, value if value != "" else None)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _holds_utf8(ds: Dataset) -> bool:
    charset = ds.get("SpecificCharacterSet")
    names = [charset] if isinstance(charset, str) else list(charset or [])
    return _UTF8 in names
