"""``cloudfilm worker`` and ``cloudfilm plugins …``: the AI commands of the console script.

Importing this module registers them on :data:`pacs.cli.app` (``viewer_api.cli`` does, so the
``cloudfilm`` script has them).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ai_plugins.packages.service import PackageService
    from ai_plugins.runner.loop import JobLoop
    from ai_plugins.runner.service import PluginService
    from pacs.archive import Archive

from pacs.cli import app, console, open_archive_or_exit, out, settings_or_exit
from pacs.errors import CloudfilmError, SettingsError

plugins_app = typer.Typer(help="AI plugins: list them, switch versions on and off, upload and admit packages.",
                          no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", min=1, max=64, help="Jobs run at once (default: WORKER_CONCURRENCY)."),
    ] = None,
    archive_url: Annotated[str | None, typer.Option(
        "--archive", help="Run as an edge worker of the archive at this URL (no database or store of its own).",
    )] = None,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="CLOUDFILM_EDGE_TOKEN", help="The edge worker's token (cloudfilm edge-workers add).",
    )] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", file_okay=False, help="With --archive: where the admitted packages it runs are installed, "
        "once per SHA-256 (default: $XDG_CACHE_HOME/cloudfilm/edge).",
    )] = None,
) -> None:
    """Run the AI worker: stable studies to plugin jobs (SR/SEG), benchmark evaluations (until Ctrl-C or SIGTERM).

    With --archive: an edge worker, leasing clinical plugin jobs from that archive over HTTP;
    it reads each study over DICOMweb, runs the plugins installed here and the archive's admitted
    packages (sandboxed, where bubblewrap is installed), and sends the findings back.
    """
    if archive_url is not None:
        _edge_worker(archive_url, token, concurrency or 1, cache_dir)
        return
    from ai_plugins.runner.worker import Worker
    from pacs.fsck import housekeep
    from pacs.nodes import NodeRegistry

    settings = settings_or_exit()
    archive = open_archive_or_exit(settings)
    node = NodeRegistry(archive, "worker")  # its job tokens must verify on every serve node
    try:
        node.start()
    except SettingsError as exc:
        archive.close()
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    housekeep(archive)  # what a killed predecessor's writes left
    try:
        _run_until_stopped(Worker(archive, concurrency=concurrency or max(1, settings.worker_concurrency)))
    finally:
        node.stop()
        archive.close()


def _edge_worker(archive_url: str, token: str | None, concurrency: int, cache_dir: Path | None) -> None:
    import logging
    from urllib.parse import urlsplit

    from ai_plugins.edge.worker import EdgeWorker

    settings_or_exit()  # logging only: an edge worker opens no index and no store
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per lease poll and heartbeat
    parts = urlsplit(archive_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        console.print("[red]error:[/red] --archive must be an http(s) URL", highlight=False)
        raise typer.Exit(2)
    if not token:
        console.print("[red]error:[/red] an edge worker needs --token (or CLOUDFILM_EDGE_TOKEN)", highlight=False)
        raise typer.Exit(2)
    _run_until_stopped(EdgeWorker(archive_url, token, concurrency=concurrency, cache_dir=cache_dir))


def _run_until_stopped(loop: JobLoop) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        loop.start()
        loop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        loop.stop()


def _service() -> PluginService:
    from ai_plugins.runner.service import PluginService

    settings = settings_or_exit()
    return PluginService(open_archive_or_exit(settings))


PartitionOpt = Annotated[str, typer.Option("--partition", help="The hospital (a [partitions.<name>] table) whose "
                                                                "plugin state this is.")]


def _partition_id(service: PluginService, slug: str) -> int:
    found = service.archive.partitions.by_slug(slug)
    if found is None:
        raise CloudfilmError(f"there is no partition {slug!r}: configure [partitions.{slug}] first")
    return found.id


@plugins_app.command("list")
def plugins_list(partition: PartitionOpt = "default") -> None:
    """Every plugin version and whether it runs (in one partition)."""
    service = _service()
    try:
        try:
            partition_id = _partition_id(service, partition)
        except CloudfilmError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        for p in service.plugins(partition=partition_id):
            state = "enabled" if p.enabled else "disabled"
            if not p.installed:
                state += ", not installed"
            where = p.endpoint_url or p.entry_point
            out.print(f"{p.key:40} {p.source.value:12} {state:24} {where}", highlight=False, soft_wrap=True)
    finally:
        service.archive.close()


def _set(name: str, version: str | None, enabled: bool, partition: str) -> None:
    service = _service()
    try:
        partition_id = _partition_id(service, partition)
        versions = [version] if version else [p.version for p in service.plugins() if p.name == name]
        if not versions:
            console.print(f"[red]error:[/red] no plugin named {name!r}", highlight=False)
            raise typer.Exit(1)
        changed = [service.set_enabled(name, v, enabled, partition=partition_id, by="cli") for v in versions]
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        service.archive.close()
    for plugin in changed:
        out.print(f"{plugin.key} {'enabled' if plugin.enabled else 'disabled'}"
                  + ("" if partition == "default" else f" in partition {partition}"), highlight=False)


VersionArg = Annotated[str | None, typer.Argument(help="One version (default: every version of the plugin).")]


@plugins_app.command("enable")
def plugins_enable(name: str, version: VersionArg = None, partition: PartitionOpt = "default") -> None:
    """Let a plugin version run on stable studies (of one partition)."""
    _set(name, version, True, partition)


@plugins_app.command("disable")
def plugins_disable(name: str, version: VersionArg = None, partition: PartitionOpt = "default") -> None:
    """Stop a plugin version in one partition (its waiting jobs there are cancelled)."""
    _set(name, version, False, partition)


# --- algorithm packages (issue 15) ------------------------------------------------------------


def _packages() -> tuple[PackageService, Archive]:
    from ai_plugins.packages.service import PackageService

    archive = open_archive_or_exit(settings_or_exit())
    return PackageService(archive), archive


@plugins_app.command("upload")
def plugins_upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A wheel, .zip or .tar.gz package.")],
    vendor: Annotated[str, typer.Option(help="The vendor account the package is uploaded for.")],
) -> None:
    """Upload an algorithm package for a vendor account (checked and kept; it runs once admitted)."""
    from pacs.accounts.users import get_user

    service, archive = _packages()
    try:
        if get_user(archive.engine, vendor).role != "vendor":
            raise CloudfilmError(f"{vendor} is not a vendor account")
        view, created = service.upload(file.read_bytes(), filename=file.name, uploaded_by=vendor)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    out.print(f"{view.key} {'uploaded' if created else 'already uploaded'}: sha256 {view.digest} ({view.status})",
              highlight=False, soft_wrap=True)  # fmt: skip


@plugins_app.command("admit")
def plugins_admit(name: str, version: str) -> None:
    """Install an uploaded package into its own environment; it may then be evaluated (and enabled)."""
    service, archive = _packages()
    try:
        view = service.admit(name, version, admitted_by="local")
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    out.print(f"{view.key} admitted: sha256 {view.digest}", highlight=False, soft_wrap=True)


@plugins_app.command("packages")
def plugins_packages() -> None:
    """Every uploaded package: name@version, status, uploader, SHA-256."""
    service, archive = _packages()
    try:
        for p in service.list_packages():
            out.print(f"{p.key:40} {p.status:9} {p.uploaded_by:16} {p.digest}", highlight=False, soft_wrap=True)
    finally:
        archive.close()


# --- edge workers (issue 15) -------------------------------------------------------------------

edge_app = typer.Typer(help="Edge workers: machines that run plugins on live studies at a hospital.",
                       no_args_is_help=True)
app.add_typer(edge_app, name="edge-workers")


@edge_app.command("add")
def edge_add(name: Annotated[str, typer.Argument(help="The machine's name (letters, digits, . _ -).")]) -> None:
    """Create an edge worker and print its token (shown once): cloudfilm worker --archive URL --token TOKEN."""
    from pacs.accounts.edge_workers import add_edge_worker

    archive = open_archive_or_exit(settings_or_exit())
    try:
        _info, token = add_edge_worker(archive.engine, name, created_by="cli")
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    out.print(token, highlight=False, soft_wrap=True)


@edge_app.command("list")
def edge_list() -> None:
    """Every edge worker, when it was last seen, and whether it is revoked."""
    from pacs.accounts.edge_workers import list_edge_workers

    archive = open_archive_or_exit(settings_or_exit())
    try:
        for w in list_edge_workers(archive.engine):
            seen = w.last_seen_at.isoformat(timespec="seconds") if w.last_seen_at else "never"
            state = "active" if w.active else f"revoked {w.revoked_at:%Y-%m-%d %H:%M}"
            out.print(f"{w.name:32} {state:24} last seen {seen}", highlight=False, soft_wrap=True)
    finally:
        archive.close()


@edge_app.command("revoke")
def edge_revoke(name: str) -> None:
    """Refuse the edge worker's token from now on (a job it holds is retried elsewhere after its lease)."""
    from pacs.accounts.edge_workers import revoke_edge_worker

    archive = open_archive_or_exit(settings_or_exit())
    try:
        revoke_edge_worker(archive.engine, name)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    out.print(f"edge worker {name} revoked", highlight=False)
