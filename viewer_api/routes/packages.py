"""Algorithm packages over HTTP: a vendor uploads one, an admin admits it (issue 15).

``POST /api/plugins/packages`` (the package file as the body; ``?filename=``),
``GET /api/plugins/packages``, ``POST /api/plugins/packages/{name}/{version}/admit``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from ai_plugins.packages.manifest import InvalidPackage
from ai_plugins.packages.service import PackageService, PackageView
from viewer_api.auth.access import Admin, VendorOrAdmin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.errors import STATUS_OF

router = APIRouter(tags=["plugins"], route_class=DeclaredRoute)
STATUS_OF.setdefault(InvalidPackage, 400)


class PackageOut(BaseModel):
    name: str
    version: str
    vendor: str
    sha256: str
    filename: str
    size: int
    status: str
    manifest: dict[str, Any]
    uploaded_by: str
    admitted_by: str | None
    created_at: datetime
    admitted_at: datetime | None


def package_out(view: PackageView) -> PackageOut:
    return PackageOut(name=view.name, version=view.version, vendor=view.vendor, sha256=view.digest,
                      filename=view.filename, size=view.size, status=view.status,
                      manifest=view.manifest.model_dump(mode="json"), uploaded_by=view.uploaded_by,
                      admitted_by=view.admitted_by or None, created_at=view.created_at,
                      admitted_at=view.admitted_at)  # fmt: skip


def _service(request: Request) -> PackageService:
    archive = archive_of(request)
    return PackageService(archive)


@router.post("/api/plugins/packages", response_model=PackageOut, status_code=201,
             summary="Upload an algorithm package")  # fmt: skip
async def upload_package(
    principal: VendorOrAdmin,
    request: Request,
    response: Response,
    filename: str = Query("package.zip", max_length=256, description="the file's name (a .whl, .zip or .tar.gz)"),
) -> PackageOut:
    """The package file is the request body; it is checked, kept and recorded, never run until admitted."""
    service = _service(request)
    limit = service.settings.package_max_upload_mb << 20
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InvalidPackage(f"the package is larger than {service.settings.package_max_upload_mb} MiB")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise InvalidPackage(f"the package is larger than {service.settings.package_max_upload_mb} MiB")
    view, created = await anyio.to_thread.run_sync(
        lambda: service.upload(bytes(body), filename=filename, uploaded_by=principal.username or principal.label))
    if not created:
        response.status_code = 200
    return package_out(view)


@router.get("/api/plugins/packages", response_model=list[PackageOut], summary="Algorithm packages")
def list_packages(principal: VendorOrAdmin, request: Request) -> list[PackageOut]:
    """Every package (admins) or the caller's own (vendors)."""
    mine = principal.username if principal.role == "vendor" else None
    return [package_out(p) for p in _service(request).list_packages(uploaded_by=mine)]


@router.post("/api/plugins/packages/{name}/{version}/admit", response_model=PackageOut,
             summary="Admit (install) an algorithm package")  # fmt: skip
def admit_package(principal: Admin, request: Request, name: str, version: str) -> PackageOut:
    """Install the package into its own environment and register its plugin version (disabled for
    clinical studies until enabled; evaluable on benchmarks at once)."""
    return package_out(_service(request).admit(name, version, admitted_by=principal.username or principal.label))
