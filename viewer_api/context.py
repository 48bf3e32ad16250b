"""Access to the process's :class:`~pacs.archive.Archive` from a request."""

from __future__ import annotations

from fastapi import Request

from pacs.archive import Archive


def archive_of(request: Request) -> Archive:
    archive: Archive = request.app.state.archive
    return archive
