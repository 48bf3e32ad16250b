"""``cloudfilm retention plan|run`` and ``cloudfilm studies hold``: retention rules and legal holds
from the command line (registered on :data:`pacs.cli.app` by ``viewer_api.cli``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from pacs.accounts.principal import Principal
from pacs.cli import app, console, open_archive_or_exit, out, settings_or_exit
from pacs.errors import CloudfilmError
from pacs.index.db import utcnow
from pacs.retention import holds
from pacs.retention.plan import Step, StepKind, plan
from pacs.retention.run import run

retention_app = typer.Typer(help="Retention rules: what they would do, and doing it now.", no_args_is_help=True)
studies_app = typer.Typer(help="Studies: legal holds.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")
app.add_typer(studies_app, name="studies")


def _line(step: Step) -> str:
    size = f"{step.instances} instance(s), {step.size_bytes / 1e6:.1f} MB" if step.instances else ""
    rule = f"[{step.rule}]" if step.rule else ""
    return "  ".join(p for p in (f"{step.kind.value:<9}", step.study_uid, step.study_date or "-", rule,
                                 step.detail, size) if p)  # fmt: skip


@retention_app.command("plan")
def plan_cmd(as_json: Annotated[bool, typer.Option("--json", help="One JSON object per step.")] = False) -> None:
    """List what `cloudfilm retention run` would do now, changing nothing."""
    settings = settings_or_exit()
    archive = open_archive_or_exit(settings)
    try:
        steps = plan(archive.engine, settings.retention_rules, utcnow(),
                     {p.slug: p.id for p in archive.partitions.all()})  # fmt: skip
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    for step in steps:
        if as_json:
            out.print(json.dumps({"kind": step.kind.value, "study_uid": step.study_uid, "rule": step.rule,
                                  "detail": step.detail, "study_date": step.study_date,
                                  "instances": step.instances, "size_bytes": step.size_bytes, "tier": step.tier,
                                  "delete_after": step.delete_after.isoformat() if step.delete_after else None,
                                  "partition": step.partition}),
                      highlight=False, soft_wrap=True)  # fmt: skip
        else:
            out.print(_line(step), highlight=False, soft_wrap=True, markup=False)
    if not as_json:
        counts = {k: sum(s.kind is k for s in steps) for k in StepKind}
        out.print(", ".join(f"{n} {k.value}" for k, n in counts.items() if n) or "nothing to do", highlight=False)


@retention_app.command("run")
def run_cmd() -> None:
    """Do now what the retention rules say (the nightly job does the same); every action is audited."""
    settings = settings_or_exit()
    archive = open_archive_or_exit(settings)
    try:
        report = run(archive.engine, archive.store, settings, utcnow(), source="cli",
                     partitions={p.slug: p.id for p in archive.partitions.all()})  # fmt: skip
    finally:
        archive.close()
    out.print(", ".join(f"{n} {kind}" for kind, n in sorted(report.counts.items())) or "nothing done",
              highlight=False)  # fmt: skip
    for error in report.errors:
        console.print(f"failed: {error}", highlight=False, soft_wrap=True, markup=False)
    if report.errors:
        raise typer.Exit(1)


@studies_app.command("hold")
def hold_cmd(
    study_uid: Annotated[str, typer.Argument(help="StudyInstanceUID")],
    reason: Annotated[str, typer.Option("--reason", help="Why (a case number), kept with the hold.")] = "",
    clear: Annotated[bool, typer.Option("--clear", help="Lift the hold instead.")] = False,
    partition: Annotated[str, typer.Option("--partition", help="The hospital (a [partitions.<name>] table) whose "
                                                               "study it is.")] = "default",
) -> None:
    """Put a study under a legal hold (no retention rule moves or deletes it), or lift it with --clear."""
    settings = settings_or_exit()
    archive = open_archive_or_exit(settings)
    try:
        found = archive.partitions.by_slug(partition)
        if found is None:
            raise CloudfilmError(f"there is no partition {partition!r}: configure [partitions.{partition}] first")
        if clear:
            holds.clear_hold(archive.engine, Principal.local_admin(), study_uid, source="cli", partition=found.id)
            out.print(f"hold on {study_uid} cleared", highlight=False)
        else:
            hold = holds.set_hold(archive.engine, Principal.local_admin(), study_uid, reason, source="cli",
                                  partition=found.id)  # fmt: skip
            out.print(f"{hold.study_uid} held since {hold.created_at:%Y-%m-%d %H:%M} UTC", highlight=False)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()


@studies_app.command("holds")
def holds_cmd() -> None:
    """List the studies under a legal hold."""
    settings = settings_or_exit()
    archive = open_archive_or_exit(settings)
    try:
        for hold in holds.list_holds(archive.engine):
            out.print(f"{hold.study_uid}  {hold.created_at:%Y-%m-%d %H:%M}  {hold.held_by}  {hold.reason}",
                      highlight=False, soft_wrap=True, markup=False)  # fmt: skip
    finally:
        archive.close()
