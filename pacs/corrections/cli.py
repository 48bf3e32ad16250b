"""``cloudfilm correct …``: corrections from the command line, made as the local admin (source ``cli``), in
the default partition or the one ``cloudfilm correct --partition SLUG …`` names."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console

from pacs.archive import Archive
from pacs.corrections import service
from pacs.corrections.types import Actor, CorrectionView, PatientChanges, PatientKey, StudyChanges
from pacs.errors import CloudfilmError, NotFound

correct_app = typer.Typer(help="Correct patient and study attributes (stored objects rewritten, originals kept).",
                          no_args_is_help=True)
_err = Console(stderr=True)
_out = Console()
_ACTOR = Actor("local", "admin")

Issuer = Annotated[str, typer.Option("--issuer", help="IssuerOfPatientID of the patient named.")]
_chosen = {"partition": "default"}


@correct_app.callback()
def _partition_option(partition: Annotated[str, typer.Option(
        "--partition", help="The partition (slug) whose patients and studies are corrected.")] = "default") -> None:
    _chosen["partition"] = partition


def _run(work: Callable[[Archive, int], CorrectionView | list[CorrectionView]]) -> None:
    from pacs.cli import open_archive_or_exit, settings_or_exit

    archive = open_archive_or_exit(settings_or_exit())
    try:
        partition = archive.partitions.by_slug(_chosen["partition"])
        if partition is None:
            raise NotFound(f"there is no partition {_chosen['partition']!r}")
        done = work(archive, partition.id)
    except CloudfilmError as exc:
        _err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()
    for item in done if isinstance(done, list) else [done]:
        _out.print(f"correction {item.id} {item.kind} {item.target}: {item.instance_count} instance(s); "
                   f"before {json.dumps(item.before, ensure_ascii=False)} after "
                   f"{json.dumps(item.after, ensure_ascii=False)}", highlight=False, soft_wrap=True)


@correct_app.command("patient")
def patient_cmd(
    patient_id: Annotated[str, typer.Argument(help="The patient's PatientID.")],
    issuer: Issuer = "",
    name: Annotated[str | None, typer.Option("--name", help="New PatientName (DICOM PN).")] = None,
    new_id: Annotated[str | None, typer.Option("--new-id", help="New PatientID.")] = None,
    new_issuer: Annotated[str | None, typer.Option("--new-issuer", help="New IssuerOfPatientID.")] = None,
    birth_date: Annotated[str | None, typer.Option("--birth-date", help="New PatientBirthDate (YYYYMMDD).")] = None,
    sex: Annotated[str | None, typer.Option("--sex", help="New PatientSex (M, F, O).")] = None,
) -> None:
    """Update a patient's attributes in every object of its studies."""
    changes = PatientChanges(name, new_id, new_issuer, birth_date, sex)
    _run(lambda a, p: service.update_patient(a, _ACTOR, PatientKey(patient_id, issuer), changes, source="cli",
                                             partition=p))


@correct_app.command("study")
def study_cmd(
    study_uid: Annotated[str, typer.Argument(help="The StudyInstanceUID.")],
    accession: Annotated[str | None, typer.Option("--accession", help="New AccessionNumber.")] = None,
    description: Annotated[str | None, typer.Option("--description", help="New StudyDescription.")] = None,
) -> None:
    """Update a study's AccessionNumber or StudyDescription."""
    _run(lambda a, p: service.update_study(a, _ACTOR, study_uid, StudyChanges(accession, description), source="cli",
                                           partition=p))


@correct_app.command("merge")
def merge_cmd(
    patient_id: Annotated[str, typer.Argument(help="The patient merged away.")],
    into: Annotated[str, typer.Argument(help="The patient that remains.")],
    issuer: Issuer = "",
    into_issuer: Annotated[str, typer.Option("--into-issuer", help="IssuerOfPatientID of the remaining one.")] = "",
) -> None:
    """File every study of one patient under another."""
    _run(lambda a, p: service.merge_patients(a, _ACTOR, PatientKey(patient_id, issuer),
                                             PatientKey(into, into_issuer), source="cli", partition=p))


@correct_app.command("move")
def move_cmd(
    study_uid: Annotated[str, typer.Argument(help="The StudyInstanceUID.")],
    to: Annotated[str, typer.Argument(help="The PatientID to file it under.")],
    issuer: Issuer = "",
) -> None:
    """File one study under another patient."""
    _run(lambda a, p: service.move_study(a, _ACTOR, study_uid, PatientKey(to, issuer), source="cli", partition=p))


@correct_app.command("revert")
def revert_cmd(correction_id: Annotated[int, typer.Argument(help="The correction to revert.")]) -> None:
    """Put back the objects a correction replaced (itself a new correction)."""
    _run(lambda a, p: service.revert(a, _ACTOR, correction_id, source="cli", partition=p))


@correct_app.command("list")
def list_cmd(limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50) -> None:
    """The latest corrections, newest first."""
    _run(lambda a, p: service.list_corrections(a.engine, limit=limit, partition=p))
