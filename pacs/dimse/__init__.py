"""DICOM network services (DIMSE): C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET and Storage Commitment.

:class:`DicomListener` is the entry point; ``cloudfilm serve`` runs it. The conformance statement
is ``docs/conformance.md``.
"""

from pacs.dimse.listener import DicomListener

__all__ = ["DicomListener"]
