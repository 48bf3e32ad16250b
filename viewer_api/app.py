"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from pacs import __version__
from pacs.archive import Archive
from viewer_api import dicomweb, portal
from viewer_api.auth.access import ACCOUNTS
from viewer_api.auth.routing import DeclaredFallback, check_declared
from viewer_api.errors import install_error_handlers
from viewer_api.request_id import RequestIdMiddleware
from viewer_api.routes import (
    benchmarks,
    changefeed,
    codecs,
    corrections,
    docs,
    edge,
    health,
    jobs,
    notifications,
    packages,
    plugins,
    reports,
    retention,
    routing,
    webhooks,
    worklist,
)
from viewer_api.routes.findings import router as findings_router


def create_app(archive: Archive) -> FastAPI:
    """Build the HTTP application around an open archive (the caller owns its lifetime).

    Refuses to build one holding a route without a declared access rule (:mod:`viewer_api.auth.routing`).
    """
    app = FastAPI(
        title="cloudfilm",
        version=__version__,
        description="Cloud film archive: DICOMweb, JSON API and web viewer.",
        openapi_url=None,  # served by viewer_api.routes.docs, under an access rule like every route
        docs_url=None,
        redoc_url=None,
    )
    app.state.archive = archive
    install_error_handlers(app)
    # DICOMweb first: routes are matched in order, and its requests are the many (a viewer's frames,
    # an OHIF study's metadata); matching them past the JSON API's routes cost a tenth of their CPU.
    dicomweb.install(app)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(packages.router)  # algorithm packages (issue 15)
    app.include_router(plugins.router)  # AI plugins and jobs (issue 6)
    app.include_router(jobs.router)
    app.include_router(edge.router)  # edge workers lease clinical plugin jobs (issue 15)
    app.include_router(changefeed.router)  # the change feed and webhooks (issue 17)
    app.include_router(webhooks.router)
    app.include_router(routing.router)  # routing rules' destinations and forwards (issue 17)
    app.include_router(worklist.router)  # the modality worklist (issue 17)
    app.include_router(retention.router)  # retention plan and legal holds (issue 17)
    app.include_router(notifications.router)  # the patient message log (issue 13)
    app.include_router(corrections.router)  # corrections and IOCM rejections (issue 17)
    app.include_router(findings_router)  # the viewer's AI findings panel, from the study's SRs (issues 5, 6)
    app.include_router(reports.router)  # physicians' reports: drafts, signing, amendments (issue 13)
    app.include_router(codecs.router)  # the viewer's in-browser decoders (issue 14)
    benchmarks.install(app)  # benchmarks, leaderboards, reports (issue 7)
    portal.install(app, archive)  # accounts, shares, viewer, audit (issue 5); before CORS
    app.router.default = DeclaredFallback(ACCOUNTS)  # an unknown path: 404, to signed-in accounts only
    origins = [o.strip() for o in archive.settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["*"], expose_headers=["ETag", "Content-Location", "Warning"],
                           max_age=600)  # fmt: skip
    app.add_middleware(RequestIdMiddleware)  # outermost: every log line of the request carries its ID
    check_declared(app)
    return app
