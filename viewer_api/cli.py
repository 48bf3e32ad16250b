"""The ``cloudfilm`` console script: the core commands plus those of the higher layers."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

import ai_plugins.cli  # noqa: F401  (registers ``worker`` and ``plugins``)
import ai_plugins.cli_benchmark  # noqa: F401  (registers ``benchmark``)
import pacs.cli_retention  # noqa: F401  (registers ``retention`` and ``studies``)
from pacs.archive import missing_index
from pacs.cli import app, open_archive_or_exit, settings_or_exit
from pacs.errors import SettingsError
from pacs.malloc import limit_arenas
from viewer_api.banner import StartUp, is_loopback
from viewer_api.cli_users import seed_admin

log = logging.getLogger("cloudfilm")


@app.command()
def serve(
    processes: Annotated[int | None, typer.Option(
        "--processes", min=1, max=256, help="Serving processes sharing the ports (or CLOUDFILM_PROCESSES; "
        "default: one per core on PostgreSQL, one on SQLite).")] = None,
) -> None:
    """Run the archive: HTTP API + viewer, DICOM listener and background workers."""
    if processes is not None:
        os.environ["CLOUDFILM_PROCESSES"] = str(processes)  # the serving processes read it too
    settings = settings_or_exit()
    if settings.auth_disabled and not is_loopback(settings.http_host):
        typer.echo(f"error: refusing to listen on {settings.http_host} with CLOUDFILM_AUTH_DISABLED: "
                   "use a loopback address (127.0.0.1) or turn authentication on", err=True)
        raise typer.Exit(2)
    created = missing_index(settings) is not None
    if created:
        log.info("creating a new archive in %s", settings.data_dir.resolve())
    archive = open_archive_or_exit(settings, create=True)
    start = StartUp(created=created, admin=seed_admin(archive))
    from viewer_api.server import serve as run_server  # the whole web app: imported only to serve
    from viewer_api.supervisor import Supervisor

    try:
        if settings.serve_processes > 1:
            code = Supervisor(archive, start, settings.serve_processes).run()
            if code:
                raise typer.Exit(code)
        else:
            run_server(archive, start)
    except OSError as exc:
        typer.echo(f"error: cannot listen: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        archive.close()


def main() -> None:
    limit_arenas()  # before any thread allocates
    app()
