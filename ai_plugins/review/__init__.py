"""Physicians review AI findings (issue 13): accept, reject or edit each, stored durably and as DICOM."""
