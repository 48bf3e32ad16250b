"""Query engine at scale: bulk-load N instances into a fresh index, time typical QIDO/C-FIND
queries through ``pacs.query.run_query`` (and a large study's metadata through ``pacs.retrieve``),
print each query's plan, then compare ingest into the loaded index with ingest into an empty one.

    .venv/bin/python benchmarks/index_scale_bench.py --instances 1000000 [--postgres | --database-url URL]
                                                     [--per-study 20] [--ingest 10000] [--repeat 20]

``--postgres`` makes a scratch database on the local server (``--pg-admin``, trust auth) and drops
it afterwards. Rows are bulk-loaded (COPY on PostgreSQL), the last study with ``--large-study``
instances (the metadata query); ``--ingest`` instances (8x8 CT slices, 100 per study) then go through
the real ingest path, first into an empty index of the same kind, then into the loaded one.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, create_engine, text  # noqa: E402

from benchmarks.bulkload import bulk_load  # noqa: E402
from pacs.access import AccessScope  # noqa: E402
from pacs.archive import Archive  # noqa: E402
from pacs.index.db import make_engine, upgrade  # noqa: E402
from pacs.query import Level, QueryRequest, compile_query, run_query  # noqa: E402
from pacs.retrieve import instance_metadata  # noqa: E402
from pacs.settings import Settings  # noqa: E402

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
STUDY_777 = "1.2.826.0.1.3680043.10.1.777"

QUERIES: list[tuple[str, QueryRequest]] = [
    ("study list, newest first", QueryRequest(Level.STUDY, {}, limit=100)),
    ("patient name prefix", QueryRequest(Level.STUDY, {"PatientName": "mül*"}, limit=100)),
    ("patient name, fuzzy", QueryRequest(Level.STUDY, {"PatientName": "jose"}, fuzzy=True, limit=100)),
    ("date range", QueryRequest(Level.STUDY, {"StudyDate": "20200101-20200131"}, limit=100)),
    ("modality", QueryRequest(Level.STUDY, {"ModalitiesInStudy": "MR"}, limit=100)),
    ("patient ID", QueryRequest(Level.STUDY, {"PatientID": "PID0000042"}, limit=100)),
    ("accession", QueryRequest(Level.STUDY, {"AccessionNumber": "ACC00001234"}, limit=100)),
    ("series of a study", QueryRequest(Level.SERIES, {"StudyInstanceUID": STUDY_777})),
    ("instances of a study", QueryRequest(Level.IMAGE, {"StudyInstanceUID": STUDY_777})),
]


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database; dropped on exit."""
    name = f"cloudfilm_scale_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})  # fmt: skip
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def timed(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[max(0, int(len(times) * 0.95) - 1)]


def plan(engine: Engine, stmt: Any) -> list[str]:
    """The plan; on PostgreSQL as executed (EXPLAIN ANALYZE: actual rows, the server's own time)."""
    compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return [r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()]
        return [r[0] for r in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, COSTS OFF) {compiled}").all()]


def ingest_rate(url: str, n: int, seed: int) -> float:
    """Instances per second through the real ingest path, 8x8 CT slices, 100 per study; the first
    study warms up (imports, connections) and is not timed."""
    from tests.factories import PATIENTS, make_ct_study, to_bytes

    blobs = []
    for s in range((n + 99) // 100 + 1):
        study = make_ct_study(PATIENTS[s % len(PATIENTS)], n_slices=min(100, n + 100 - 100 * s), rows=8, cols=8,
                              seed=seed * 100_000 + s)  # fmt: skip
        blobs += [to_bytes(ds) for ds in study]
    with tempfile.TemporaryDirectory(prefix="cloudfilm-scale-ingest-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=url)
        with Archive.open(settings) as archive:
            started = 0.0
            for i, blob in enumerate(blobs):
                if i == 100:
                    started = time.perf_counter()
                result = archive.ingest.store_bytes(blob)
                assert result.ok, result.reason
            return (len(blobs) - 100) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--per-study", type=int, default=20)
    parser.add_argument("--large-study", type=int, default=1000, help="instances of the metadata study")
    parser.add_argument("--database-url")
    parser.add_argument("--postgres", action="store_true", help="a scratch database on --pg-admin's server")
    parser.add_argument("--pg-admin", default=PG_ADMIN)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--ingest", type=int, default=10_000, help="instances ingested (0: skip)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(scratch_database(args.pg_admin))
        else:
            url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='cloudfilm-scale-')}/index.sqlite3"
        run(url, args, stack)


def run(url: str, args: argparse.Namespace, stack: contextlib.ExitStack) -> None:
    engine = make_engine(url)
    upgrade(engine)
    studies = args.instances // args.per_study
    started = time.perf_counter()
    bulk_load(engine, studies=studies, instances_per_study=args.per_study, large_study=args.large_study)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    with engine.connect() as conn:
        total = conn.execute(text("SELECT count(*) FROM instances")).scalar_one()
    print(f"loaded {total:,} instances in {studies:,} studies ({engine.dialect.name}) "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            sizes = conn.execute(text(
                "SELECT relname, pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c "
                "WHERE relname IN ('patients', 'studies', 'series', 'instances') ORDER BY relname")).all()
        for name, table_bytes, index_bytes in sizes:
            print(f"  {name:<10} table {table_bytes / 2**20:>8,.0f} MiB, indexes {index_bytes / 2**20:>6,.0f} MiB")
        whole = sum(t + i for _n, t, i in sizes)
        print(f"  {whole / total:,.0f} bytes of index per instance (tables and indexes)")
    large_uid = f"1.2.826.0.1.3680043.10.1.{studies - 1}"
    rows: list[tuple[str, float, float, int, list[str]]] = []
    for label, request in QUERIES:
        count = [0]

        def query(request: QueryRequest = request, count: list[int] = count) -> None:
            count[0] = len(list(run_query(engine, request)))

        p50, p95 = timed(query, args.repeat)
        stmt, _, _ = compile_query(request, engine.dialect.name)
        rows.append((label, p50, p95, count[0], plan(engine, stmt)))
    scope = AccessScope.everything()
    got = [0]

    def metadata() -> None:
        got[0] = len(instance_metadata(engine, scope, study_uid=large_uid))

    p50, p95 = timed(metadata, args.repeat)
    rows.append((f"metadata, {args.large_study:,}-instance study", p50, p95, got[0], []))
    print(f"\n{'query':<34} {'p50 ms':>8} {'p95 ms':>8} {'rows':>6}")
    for label, p50, p95, n, _plan in rows:
        print(f"{label:<34} {p50:>8.1f} {p95:>8.1f} {n:>6}")
    print("\nplans:")
    for label, *_rest, lines in rows:
        if lines:
            print(f"-- {label}")
            for line in lines:
                print(f"   {line}")
    engine.dispose()
    if args.ingest:
        if args.postgres:
            empty = stack.enter_context(scratch_database(args.pg_admin))
        else:
            empty = f"sqlite:///{tempfile.mkdtemp(prefix='cloudfilm-scale-empty-')}/index.sqlite3"
        first = ingest_rate(empty, args.ingest, seed=1)
        print(f"\ningest, first {args.ingest:,} instances (empty index): {first:.0f} instances/s", flush=True)
        nxt = ingest_rate(url, args.ingest, seed=2)
        print(f"ingest, next {args.ingest:,} instances (after {total:,}): {nxt:.0f} instances/s "
              f"({nxt / first:.2f}x the first)")


if __name__ == "__main__":
    main()
