"""The ``cloudfilm`` command line: the commands that need only the archive core.

Commands that need higher layers (``serve``, ``users``, ``worker``, ``benchmark``) are added to
this Typer app by ``ai_plugins.cli`` and ``viewer_api.cli``; the console script is
``viewer_api.cli:main``, which assembles all of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from pacs import __version__, logs
from pacs.archive import Archive
from pacs.corrections.cli import correct_app
from pacs.errors import CloudfilmError, SettingsError
from pacs.ingest import IngestResult, Outcome
from pacs.settings import CONFIG_ENV, DATA_DIR_ENV, Settings, load_settings

app = typer.Typer(help="cloudfilm: a cloud film archive for hospitals.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
db_app = typer.Typer(help="Index database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(correct_app, name="correct")
console = Console(stderr=True)
out = Console()


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option("--config", help="TOML settings file (or CLOUDFILM_CONFIG).")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="The archive's data directory (or CLOUDFILM_DATA_DIR; default ./cloudfilm-data).")] = None,
) -> None:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)
    if data_dir is not None:
        os.environ[DATA_DIR_ENV] = str(data_dir)


def settings_or_exit() -> Settings:
    """Load settings; an invalid one stops with one line naming it and exit code 2."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level, settings.log_format)
    return settings


def open_archive_or_exit(settings: Settings, *, migrate: bool = True, create: bool = False) -> Archive:
    """The archive the settings name; only ``serve`` and ``import`` pass ``create`` (and ``db upgrade``
    makes its index): any other command run in the wrong folder stops, naming where it looked."""
    try:
        return Archive.open(settings, migrate=migrate, create=create)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def version() -> None:
    """Print the cloudfilm version."""
    out.print(f"cloudfilm {__version__}", highlight=False)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to the index database."""
    from pacs.index import db

    settings = settings_or_exit()
    engine = db.make_engine(settings.resolved_database_url)
    try:
        db.upgrade(engine)
        out.print(f"index at revision {db.current_revision(engine)}", highlight=False)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _walk(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        else:
            yield path


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (recursively) to import.")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Parallel readers.")] = 4,
) -> None:
    """Import DICOM files into the archive; each rejected file is listed with its reason.

    A file holding a data set without File Meta Information is stored behind the archive's own meta
    (PS3.10 7.1), as DCMTK's tools write one, like a data set received over DIMSE."""
    settings = settings_or_exit()
    missing = [p for p in paths if not p.exists()]
    if missing:
        console.print(f"[red]error:[/red] no such file or folder: {missing[0]}", highlight=False)
        raise typer.Exit(2)
    archive = open_archive_or_exit(settings, create=True)
    files = list(_walk(paths))
    counts = {"stored": 0, "duplicate": 0, "rejected": 0}
    try:
        with Progress(TextColumn("[bold]importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=not sys.stderr.isatty()) as progress:
            task = progress.add_task("import", total=len(files))
            results = archive.ingest.store_files(files, jobs=jobs, file_meta=_file_meta)
            for path, result in zip(files, results, strict=True):
                _count(counts, path, result)
                progress.advance(task)
    finally:
        archive.close()
    out.print(f"{counts['stored']} stored, {counts['duplicate']} duplicate, {counts['rejected']} rejected",
              highlight=False)
    if counts["rejected"]:
        raise typer.Exit(1)


@app.command("import-share")
def import_share_cmd(
    url: Annotated[str, typer.Argument(
        help="The share's DICOMweb URL (…/dicomweb, or …/dicomweb/studies/{StudyInstanceUID}).")],
    token: Annotated[str, typer.Argument(help="The share's DICOMweb token (cfs_…); - reads it from stdin.")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=16, help="Instances fetched at once.")] = 4,
) -> None:
    """Pull a study another archive shared with a clinician here into this archive, byte for byte.

    Each instance this archive lacks is retrieved over WADO-RS as the other archive stores it and
    stored through the same path as ``import``; a second run fetches nothing."""
    from pacs.share_import import import_share  # the HTTP client is loaded only when needed
    from pacs.wado_client import DicomwebError

    settings = settings_or_exit()
    secret = sys.stdin.readline().strip() if token == "-" else token.strip()
    if not secret:
        console.print("[red]error:[/red] no token given", highlight=False)
        raise typer.Exit(2)
    archive = open_archive_or_exit(settings, create=True)
    try:
        with Progress(TextColumn("[bold]importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=not sys.stderr.isatty()) as progress:
            task: TaskID | None = None

            def advance(done: int, total: int) -> None:
                nonlocal task
                if task is None:
                    task = progress.add_task("import-share", total=total)
                progress.update(task, completed=done)

            report = import_share(archive.ingest, archive.engine, url, secret, jobs=jobs, progress=advance)
    except DicomwebError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    for sop_uid in report.kept_existing:
        console.print(f"[yellow]kept existing[/yellow] {sop_uid}: this archive holds another version", highlight=False)
    for sop_uid, reason in report.rejected:
        console.print(f"[red]rejected[/red] {sop_uid}: {reason}", highlight=False, soft_wrap=True)
    out.print(f"study {report.study_uid}: {report.listed} instances, {report.stored} stored, "
              f"{report.already_here} already here, {len(report.rejected)} rejected", highlight=False)
    if not report.complete:
        raise typer.Exit(1)


def _file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """The archive's File Meta Information for a data set imported without one (no Source AE Title)."""
    from pacs.dimse.store import archive_meta  # the DICOM network stack is loaded only when needed

    return archive_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid, "")


def _count(counts: dict[str, int], path: Path, result: IngestResult) -> None:
    if result.outcome in (Outcome.STORED, Outcome.REPLACED):
        counts["stored"] += 1
    elif result.ok:
        counts["duplicate"] += 1
        if result.warning:
            console.print(f"[yellow]kept existing[/yellow] {path}: {result.reason}", highlight=False)
    else:
        counts["rejected"] += 1
        console.print(f"[red]rejected[/red] {path}: {result.reason}", highlight=False, soft_wrap=True)


@app.command("fsck")
def fsck_cmd(
    repair: Annotated[bool, typer.Option(
        "--repair", help="Delete orphan objects and leftovers of interrupted writes (never index rows).")] = False,
    deep: Annotated[bool, typer.Option("--deep", help="Also verify every object's SHA-256.")] = False,
    grace: Annotated[float | None, typer.Option(
        "--grace", help="Leave orphans and leftovers younger than this many seconds (default LEFTOVER_GRACE).")] = None,
) -> None:
    """Check that every object the index names (instances, uploaded packages) is in the store; list
    objects without an index row and the temp, staging and spool files interrupted writes left."""
    from pacs.fsck import fsck

    settings = settings_or_exit()
    archive = open_archive_or_exit(settings)
    try:
        report = fsck(archive, deep=deep, repair=repair, grace_s=grace)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    for label, items in (("missing object", report.missing), ("wrong size", report.wrong_size),
                         ("wrong hash", report.wrong_hash), ("orphan object", report.orphans),
                         ("removed leftover" if repair else "leftover", report.leftovers)):
        for item in items:
            out.print(f"{label}: {item}", highlight=False, soft_wrap=True)
    other = report.checked - report.checked_instances  # uploaded algorithm packages
    checked = f"{report.checked_instances} instances" + (f" and {other} other objects" if other else "")
    out.print(f"{checked} checked, {report.problems} problems"
              + (f", {report.removed_orphans} orphan objects removed, {report.removed_leftovers} leftovers removed"
                 if repair else ""), highlight=False)  # fmt: skip
    remaining = report.problems - report.repaired
    if remaining:
        raise typer.Exit(1)


@app.command("backup")
def backup_cmd(
    dest: Annotated[Path, typer.Argument(help="Backup folder: created, or updated in place (incremental).")],
    with_secret_key: Annotated[bool, typer.Option(
        "--with-secret-key", help="Also copy the secret key (share links, sessions and job tokens stay valid "
                                  "after a restore; keep such a backup as safe as the archive).")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Objects copied at once.")] = 8,
) -> None:
    """Write a consistent copy of the archive while it runs: the index, the objects not yet in DEST
    (checked by size and SHA-256) and a manifest."""
    from pacs.backup import backup

    archive = open_archive_or_exit(settings_or_exit(), migrate=False)
    try:
        with _steps() as progress:
            manifest = backup(archive, dest, with_secret_key=with_secret_key, jobs=jobs, progress=progress)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    out.print(f"backup of {manifest.instances} instances ({manifest.object_bytes / 1e6:,.1f} MB) in {dest}: "
              f"{manifest.copied} objects copied, {manifest.objects - manifest.copied} already there"
              + (", secret key included" if manifest.secret_key else ""), highlight=False)  # fmt: skip
    for key in manifest.missing:
        out.print(f"deleted after the snapshot, not in the backup: {key}", highlight=False)


@app.command("restore")
def restore_cmd(
    source: Annotated[Path, typer.Argument(help="A folder written by `cloudfilm backup`.")],
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="Objects copied at once.")] = 8,
) -> None:
    """Rebuild an archive from a backup into an empty target (the data directory, database and object
    store the settings name), e.g. from SQLite + filesystem into PostgreSQL + S3."""
    from pacs.backup import restore

    settings = settings_or_exit()
    try:
        with _steps() as progress:
            report = restore(source, settings, jobs=jobs, progress=progress)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    out.print(f"restored {report.instances} instances, {report.objects} objects "
              f"({report.object_bytes / 1e6:,.1f} MB)" + (", secret key" if report.secret_key else "")
              + "; check it with `cloudfilm fsck --deep`", highlight=False)  # fmt: skip


@contextmanager
def _steps() -> Iterator[Callable[[str, int, int], None]]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=not sys.stderr.isatty()) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], completed=done, total=total)

        yield progress


def main() -> None:
    app()
