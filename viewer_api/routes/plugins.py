"""AI plugins over HTTP: list them with their state, vendors register hosted ones, admins switch
versions on and off, staff re-run a plugin on a study.

``GET /api/plugins``, ``POST /api/plugins``, ``PATCH /api/plugins/{name}/{version}``,
``POST /api/studies/{uid}/plugins/{name}/run``, ``GET /api/plugins/{name}/{version}/reviews``,
``GET /api/plugins/watch`` and ``GET /api/plugins/{name}/{version}/watch`` (clinical use beside the
benchmark figures), and the page ``/viewer/plugins``. Enabling under a deployment gate without a
passing evaluation is a 409 with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel

from ai_plugins.review.service import ReviewCounts, plugin_review_counts
from ai_plugins.review.watch import PluginWatch, watch_all, watch_plugin
from ai_plugins.runner.registry import PluginView, RemoteManifest
from ai_plugins.runner.service import PluginService
from pacs.accounts.principal import scope_for
from viewer_api.auth.access import Admin, AiReader, Staff, VendorOrAdmin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.pages import render
from viewer_api.routes.jobs import JobOut, job_out, plugin_service

router = APIRouter(tags=["plugins"], route_class=DeclaredRoute)


class PluginOut(BaseModel):
    name: str
    version: str
    source: str
    vendor: str
    description: str
    intended_use: str
    input_filter: dict[str, Any]
    endpoint_url: str | None
    package_sha256: str | None  # an algorithm package's digest
    timeout_s: float
    enabled: bool
    installed: bool
    registered_by: str | None
    created_at: datetime
    updated_at: datetime


class PluginState(BaseModel):
    enabled: bool


def plugin_out(view: PluginView) -> PluginOut:
    return PluginOut(
        name=view.name, version=view.version, source=view.source.value, vendor=view.vendor,
        description=view.description, intended_use=view.intended_use,
        input_filter=view.input_filter.model_dump(mode="json"), endpoint_url=view.endpoint_url or None,
        package_sha256=view.digest or None,
        timeout_s=view.timeout_s, enabled=view.enabled, installed=view.installed,
        registered_by=view.registered_by or None, created_at=view.created_at, updated_at=view.updated_at,
    )  # fmt: skip


@router.get("/api/plugins", response_model=list[PluginOut], summary="Plugins and their state")
def list_plugins(
    principal: AiReader,
    service: PluginService = Depends(plugin_service),
) -> list[PluginOut]:
    """Every plugin version, enabled or not; a vendor sees the plugins it registered."""
    mine = principal.username if principal.role == "vendor" else None
    return [plugin_out(p) for p in service.plugins(registered_by=mine, partition=principal.home_partition)]


@router.post("/api/plugins", response_model=PluginOut, status_code=201, summary="Register a hosted plugin")
def register_plugin(
    principal: VendorOrAdmin,
    manifest: RemoteManifest,
    response: Response,
    service: PluginService = Depends(plugin_service),
) -> PluginOut:
    """A vendor registers a plugin version it hosts; it stays disabled until an admin enables it."""
    view, created = service.register(manifest, registered_by=principal.username or principal.label)
    if not created:
        response.status_code = 200
    return plugin_out(view)


@router.patch("/api/plugins/{name}/{version}", response_model=PluginOut, summary="Enable or disable a version")
def set_plugin_state(
    admin: Admin,
    name: str,
    version: str,
    state: PluginState,
    service: PluginService = Depends(plugin_service),
) -> PluginOut:
    """Turn one plugin version on or off in the caller's partition; a disabled version never runs there (its
    waiting jobs are cancelled)."""
    return plugin_out(service.set_enabled(name, version, state.enabled, partition=admin.home_partition,
                                          by=admin.label))  # fmt: skip


@router.post("/api/studies/{study_uid}/plugins/{name}/run", response_model=JobOut, status_code=202,
             summary="Re-run a plugin on a study")  # fmt: skip
def rerun_plugin(
    principal: Staff,
    study_uid: str,
    name: str,
    response: Response,
    version: str | None = Query(None, description="a version (default: the newest enabled one)"),
    service: PluginService = Depends(plugin_service),
) -> JobOut:
    """Queue a new run, which writes a new SR next to the earlier ones; a waiting or running job is returned."""
    job, created = service.rerun(study_uid, name, version=version, requested_by=principal.label,
                                 scope=scope_for(principal))  # fmt: skip
    if not created:
        response.status_code = 200
    return job_out(job)


@router.get("/api/plugins/{name}/{version}/reviews", response_model=ReviewCounts,
            summary="How physicians judged one plugin version's findings: accepted / rejected / edited")  # fmt: skip
def plugin_reviews(principal: Staff, name: str, version: str, service: PluginService = Depends(plugin_service)) \
        -> ReviewCounts:  # fmt: skip
    """Counts of the current decisions on the version's findings (staff: they hold the patients' data it
    is computed from; a vendor asks the hospital). 404 for a version that is not registered."""
    service.registry.get(name, version)
    return plugin_review_counts(service.archive.engine, name, version)


@router.get("/api/plugins/watch", response_model=list[PluginWatch],
            summary="Plugin versions in clinical use: reviews, finding rate per week, benchmark figures")  # fmt: skip
def plugins_watch(_staff: Staff, service: PluginService = Depends(plugin_service)) -> list[PluginWatch]:
    """Every version enabled or reviewed, with its acceptance alert (staff, as the review counts)."""
    service.plugins()
    return watch_all(service.archive.engine, service.archive.settings, service.registry)


@router.get("/api/plugins/{name}/{version}/watch", response_model=PluginWatch,
            summary="One plugin version in clinical use beside its benchmark figures")  # fmt: skip
def plugin_watch(_staff: Staff, name: str, version: str, service: PluginService = Depends(plugin_service)) \
        -> PluginWatch:  # fmt: skip
    """404 for a version that is not registered."""
    return watch_plugin(service.archive.engine, service.archive.settings, service.registry.get(name, version))


@router.get("/viewer/plugins", include_in_schema=False)
def plugins_page(staff: Staff, request: Request, service: PluginService = Depends(plugin_service)) -> Response:
    """The plugins with their state (in the caller's partition), and for those in clinical use the watch beside
    the benchmark figures."""
    plugins = service.plugins(partition=staff.home_partition)
    watched = {(w.plugin, w.version): w for w in watch_all(service.archive.engine, service.archive.settings,
                                                           service.registry)}  # fmt: skip
    settings = service.archive.settings
    return render(request, "plugins.html", plugins=plugins, watched=watched, gate=settings.plugins_gate_benchmark,
                  gate_metric=settings.plugins_gate_metric, gate_min=settings.plugins_gate_min,
                  min_reviews=settings.plugins_watch_min_reviews)  # fmt: skip
