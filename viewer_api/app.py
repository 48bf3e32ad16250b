"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from pacs import __version__
from pacs.archive import Archive
from viewer_api.errors import install_error_handlers
from viewer_api.routes import health


def create_app(archive: Archive) -> FastAPI:
    """Build the HTTP application around an open archive (the caller owns its lifetime)."""
    app = FastAPI(
        title="cloudfilm",
        version=__version__,
        description="Cloud film archive: DICOMweb, JSON API and web viewer.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.archive = archive
    install_error_handlers(app)
    app.include_router(health.router)
    return app
