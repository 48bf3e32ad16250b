"""The ``cloudfilm`` console script: the core commands plus those of the higher layers."""

from __future__ import annotations

import logging

import typer

import ai_plugins.cli  # noqa: F401  (registers ``worker`` and ``plugins``)
import ai_plugins.cli_benchmark  # noqa: F401  (registers ``benchmark``)
from pacs.cli import app, open_archive_or_exit, settings_or_exit
from viewer_api.cli_users import is_loopback, seed_admin

log = logging.getLogger("cloudfilm")


@app.command()
def serve() -> None:
    """Run the archive: HTTP API + viewer, DICOM listener and background workers."""
    settings = settings_or_exit()
    if settings.auth_disabled and not is_loopback(settings.http_host):
        typer.echo(f"error: refusing to listen on {settings.http_host} with CLOUDFILM_AUTH_DISABLED: "
                   "use a loopback address (127.0.0.1) or turn authentication on", err=True)
        raise typer.Exit(2)
    archive = open_archive_or_exit(settings)
    seed_admin(archive)
    logging.getLogger("cloudfilm.serve").info("data directory: %s", settings.data_dir.resolve())
    from viewer_api.server import serve as run_server  # the whole web app: imported only to serve

    try:
        run_server(archive)
    except OSError as exc:
        typer.echo(f"error: cannot listen: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()


def main() -> None:
    app()
