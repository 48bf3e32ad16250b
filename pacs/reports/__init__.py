"""Physicians' reports (issue 13): drafts, signing into the study as DICOM, versions and amendments."""
