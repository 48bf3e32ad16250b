"""The archive's error hierarchy.

Every failure a caller can act on is one of these. Entry points map them once: DIMSE statuses in
``pacs.dimse``, HTTP codes in ``viewer_api``. The message is one sentence a user can read; details
go to the log.
"""

from __future__ import annotations


class CloudfilmError(Exception):
    """Base class: ``str(err)`` is one sentence fit for a user."""


class InvalidDataset(CloudfilmError):
    """The data is DICOM but breaks a rule we enforce (missing or malformed UIDs, ...)."""


class NotDicom(CloudfilmError):
    """The data cannot be parsed as a DICOM Part 10 file or dataset."""


class StorageUnavailable(CloudfilmError):
    """The object store or the index database cannot be reached or refused the write."""


class NotFound(CloudfilmError):
    """The requested patient, study, series, instance or frame does not exist (or is not visible)."""


class Conflict(CloudfilmError):
    """The request contradicts what the archive already holds."""


class InvalidQuery(CloudfilmError):
    """A query key or value is malformed (bad date range, unknown attribute, bad limit...)."""


class SettingsError(CloudfilmError):
    """A setting is missing or invalid; the message names the setting."""


class NoArchive(SettingsError):
    """The settings point at an archive that does not exist yet (a command other than ``serve``,
    ``db upgrade`` or ``import`` never creates one by accident)."""
