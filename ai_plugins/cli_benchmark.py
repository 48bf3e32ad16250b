"""``cloudfilm benchmark …``: define benchmarks, evaluate plugins, show leaderboards (issue 7).

Importing this module registers the group on :data:`pacs.cli.app` (``viewer_api.cli`` does).
Commands act as the local administrator; ``evaluate`` runs the evaluation's jobs in this process
(next to any ``cloudfilm serve`` sharing the archive) and shows their progress, unless ``--no-wait``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from pacs.cli import app, console, open_archive_or_exit, out, settings_or_exit
from pacs.errors import CloudfilmError

if TYPE_CHECKING:
    from ai_plugins.benchmarks.evaluation import EvaluationView
    from ai_plugins.benchmarks.service import BenchmarkService

benchmark_app = typer.Typer(help="AI benchmarks on hidden-label test sets.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")

CLI_USER = "local"
Bench = Annotated[str, typer.Argument(help="Benchmark id or name.")]


PartitionOpt = Annotated[str, typer.Option("--partition", help="The hospital (a [partitions.<name>] table) whose "
                                                                "benchmarks and studies these are.")]


@contextmanager
def _service(partition: str = "default") -> Iterator[BenchmarkService]:
    from ai_plugins.benchmarks.service import BenchmarkService

    archive = open_archive_or_exit(settings_or_exit())
    try:
        found = archive.partitions.by_slug(partition)
        if found is None:
            raise CloudfilmError(f"there is no partition {partition!r}: configure [partitions.{partition}] first")
        yield BenchmarkService(archive, partition=found.id)
    except CloudfilmError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        archive.close()


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)  # fmt: skip


@benchmark_app.command("list")
def list_(partition: PartitionOpt = "default") -> None:
    """Every benchmark and its newest dataset version."""
    with _service(partition) as service:
        for b in service.benchmarks():
            v = b.current
            where = f"v{v.number} {v.n_cases} studies ({v.n_dev} dev, {v.n_test} test)" if v else "no studies"
            out.print(f"{b.id:>4}  {b.name:32} {b.task.value:15} {where}", highlight=False)


@benchmark_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A unique name.")],
    task: Annotated[str, typer.Option(help="classification, detection or segmentation.")] = "classification",
    description: Annotated[str, typer.Option(help="What the benchmark measures.")] = "",
    classes: Annotated[str, typer.Option(help="Classification: the two classes, comma-separated.")] = "",
    positive: Annotated[str, typer.Option(help="Classification: the positive class.")] = "",
    code: Annotated[str, typer.Option(help="The plugin classification scored, VALUE:SCHEME (default: first).")] = "",
    metric: Annotated[list[str] | None, typer.Option(help="Reported metrics, main first (repeat).")] = None,
    partition: PartitionOpt = "default",
) -> None:
    """Create a benchmark (no studies yet)."""
    from ai_plugins.benchmarks.labels import LabelSchema
    from ai_plugins.sdk import Code

    values: dict[str, object] = {}
    if classes:
        values["classes"] = tuple(c.strip() for c in classes.split(","))
        values["positive"] = positive or str(values["classes"][-1])  # type: ignore[index]
    elif positive:
        values["positive"] = positive
    if code:
        value, _, scheme = code.partition(":")
        values["code"] = Code(value=value, scheme=scheme or "SCT", meaning=value)
    with _service(partition) as service:
        try:
            schema = LabelSchema.model_validate(values)
        except ValueError as exc:
            console.print(f"[red]error:[/red] {str(exc).splitlines()[-1].strip()}", highlight=False)
            raise typer.Exit(2) from None
        bench = service.create(name=name, task=task, description=description, schema=schema, metrics=metric or (),
                               created_by=CLI_USER)  # fmt: skip
    out.print(f"benchmark {bench.id} {bench.name} ({bench.task.value}, main metric {bench.main_metric})",
              highlight=False)  # fmt: skip


@benchmark_app.command("add-studies")
def add_studies(
    benchmark: Bench,
    uids: Annotated[list[str] | None, typer.Argument(help="StudyInstanceUIDs.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A file of StudyInstanceUIDs, one a line.")] = None,
    query: Annotated[list[str] | None, typer.Option(help="Study-level QIDO key=value (repeat), e.g. "
                                                         "ModalitiesInStudy=CT.")] = None,
    partition: PartitionOpt = "default",
) -> None:
    """Add studies by UID or by query; a new dataset version."""
    study_uids = list(uids or [])
    if file is not None:
        study_uids += [line.strip() for line in file.read_text().splitlines() if line.strip()]
    filters: dict[str, str] = {}
    for item in query or []:
        key, sep, value = item.partition("=")
        if not sep:
            console.print(f"[red]error:[/red] --query takes key=value, not {item!r}", highlight=False)
            raise typer.Exit(2)
        filters[key.strip()] = value.strip()
    with _service(partition) as service:
        result = service.add_studies(benchmark, study_uids=study_uids, query=filters or None, created_by=CLI_USER)
    out.print(f"added {result.added} studies ({result.already} already in it): version {result.version.number}, "
              f"{result.version.n_cases} studies, digest {result.version.digest[:16]}", highlight=False)  # fmt: skip


@benchmark_app.command("labels")
def labels(
    benchmark: Bench,
    file: Annotated[Path, typer.Argument(help="Labels as CSV or JSON.", exists=True, dir_okay=False)],
    format: Annotated[str | None, typer.Option(help="csv or json (default: from the file name).")] = None,
    partition: PartitionOpt = "default",
) -> None:
    """Import ground-truth labels (all or nothing); a new dataset version."""
    fmt = format or ("csv" if file.suffix.lower() == ".csv" else "json")
    with _service(partition) as service:
        version = service.import_labels(benchmark, file.read_text(encoding="utf-8"), fmt=fmt, created_by=CLI_USER)
    out.print(f"version {version.number}: {version.n_labelled} of {version.n_cases} studies labelled, "
              f"digest {version.digest[:16]}", highlight=False)  # fmt: skip


@benchmark_app.command("split")
def split(
    benchmark: Bench,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split.", min=0)],
    test_fraction: Annotated[float, typer.Option(help="Share of studies in the hidden test split.")] = 0.5,
    partition: PartitionOpt = "default",
) -> None:
    """Split into dev and hidden test (stratified by label), publish the dev split de-identified."""
    with _service(partition) as service, _progress() as progress:
        bar = progress.add_task("de-identifying the dev split", total=None)
        result = service.split(benchmark, seed=seed, test_fraction=test_fraction, created_by=CLI_USER,
                               progress=lambda n, total: progress.update(bar, completed=n, total=total))  # fmt: skip
    v = result.version
    out.print(f"version {v.number}: {v.n_dev} dev, {v.n_test} test (seed {seed}); {result.published} dev studies "
              f"published de-identified; digest {v.digest[:16]}", highlight=False)  # fmt: skip
    for problem in result.not_published:
        console.print(f"[yellow]not published:[/yellow] {problem}", highlight=False, soft_wrap=True)


def _wait(service: BenchmarkService, evaluation_id: int, concurrency: int) -> EvaluationView:
    from ai_plugins.benchmarks.evaluation import KINDS
    from ai_plugins.runner.worker import Worker

    worker = Worker(service.archive, concurrency=concurrency, kinds=KINDS)
    worker.start()
    try:
        with _progress() as progress:
            view = service.evaluation(evaluation_id)
            bar = progress.add_task(f"evaluating {view.plugin}", total=view.n_cases)
            while not view.finished:
                progress.update(bar, completed=view.n_done,
                                description=f"evaluating {view.plugin}" + (" (scoring)" if view.n_done ==
                                                                            view.n_cases else ""))  # fmt: skip
                time.sleep(0.3)
                view = service.evaluation(evaluation_id)
            progress.update(bar, completed=view.n_done)
    finally:
        worker.stop()
    return view


@benchmark_app.command("evaluate")
def evaluate(
    benchmark: Bench,
    plugin: Annotated[str, typer.Argument(help="name or name@version (default version: the newest).")],
    dataset_version: Annotated[int | None, typer.Option(help="Dataset version (default: the newest).")] = None,
    threshold: Annotated[float, typer.Option(help="Operating point of the binary metrics.", min=0, max=1)] = 0.5,
    force: Annotated[bool, typer.Option(help="Past the daily limit of evaluations.")] = False,
    wait: Annotated[bool, typer.Option(help="Run the jobs here and wait for the metrics.")] = True,
    concurrency: Annotated[int, typer.Option(help="Cases run at once while waiting.", min=1, max=64)] = 1,
    partition: PartitionOpt = "default",
) -> None:
    """Evaluate plugin@version on the hidden test split (through the job queue)."""
    name, _, version = plugin.partition("@")
    with _service(partition) as service:
        view = service.evaluate(benchmark, name, plugin_version=version or None, version_number=dataset_version,
                                threshold=threshold, requested_by=CLI_USER, requester_role="admin", force=force)
        out.print(f"evaluation {view.id}: {view.plugin} on {view.benchmark_name} v{view.version_number} "
                  f"({view.n_cases} test cases)", highlight=False)  # fmt: skip
        if not wait:
            return
        view = _wait(service, view.id, concurrency)
    if view.status != "done":
        console.print(f"[red]error:[/red] evaluation {view.id} {view.status}: {view.error}", highlight=False)
        raise typer.Exit(1)
    ci = f" (95% CI {view.ci_low:.4f}-{view.ci_high:.4f})" if view.ci_low is not None and view.ci_high is not None \
        else ""
    value = "n/a" if view.main_value is None else f"{view.main_value:.4f}"
    out.print(f"{view.main_metric} = {value}{ci}; {view.n_failed} failed of {view.n_cases}", highlight=False)


@benchmark_app.command("leaderboard")
def leaderboard(
    benchmark: Bench,
    version: Annotated[int | None, typer.Option(help="Dataset version (default: the newest).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    partition: PartitionOpt = "default",
) -> None:
    """Plugins ranked by the main metric on one dataset version."""
    with _service(partition) as service:
        bench, found, rows = service.leaderboard(benchmark, version)
    if as_json:
        out.print_json(json.dumps({
            "benchmark": bench.name, "dataset_version": found.number, "dataset_digest": found.digest,
            "metric": bench.main_metric,
            "rows": [{"rank": r.rank, "plugin": r.plugin, "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high,
                      "n_cases": r.n_cases, "n_failed": r.n_failed, "evaluation_id": r.evaluation_id,
                      "date": r.date.isoformat() if r.date else None} for r in rows]}))  # fmt: skip
        return
    table = Table(title=f"{bench.name} v{found.number} · {bench.main_metric}")
    for column in ("#", "plugin", bench.main_metric, "95% CI", "cases", "date"):
        table.add_column(column)
    for r in rows:
        table.add_row(str(r.rank), r.plugin, "n/a" if r.value is None else f"{r.value:.4f}",
                      "" if r.ci_low is None or r.ci_high is None else f"{r.ci_low:.4f}-{r.ci_high:.4f}",
                      f"{r.n_cases}" + (f" ({r.n_failed} failed)" if r.n_failed else ""),
                      r.date.strftime("%Y-%m-%d %H:%M") if r.date else "")  # fmt: skip
    out.print(table)
