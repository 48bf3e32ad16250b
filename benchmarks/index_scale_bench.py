"""Query engine at scale: bulk-load N instances into a fresh index, time typical QIDO/C-FIND
queries through ``pacs.query.run_query`` and show each query's plan (indexes used).

    .venv/bin/python benchmarks/index_scale_bench.py --instances 1000000 [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from benchmarks.bulkload import bulk_load  # noqa: E402
from pacs.index.db import make_engine, upgrade  # noqa: E402
from pacs.query import Level, QueryRequest, compile_query, run_query  # noqa: E402

QUERIES: list[tuple[str, QueryRequest]] = [
    ("study list, newest first", QueryRequest(Level.STUDY, {}, limit=100)),
    ("patient name prefix", QueryRequest(Level.STUDY, {"PatientName": "mül*"}, limit=100)),
    ("patient name, fuzzy", QueryRequest(Level.STUDY, {"PatientName": "jose"}, fuzzy=True, limit=100)),
    ("date range", QueryRequest(Level.STUDY, {"StudyDate": "20200101-20200131"}, limit=100)),
    ("modality", QueryRequest(Level.STUDY, {"ModalitiesInStudy": "MR"}, limit=100)),
    ("patient ID", QueryRequest(Level.STUDY, {"PatientID": "PID0000042"}, limit=100)),
    ("accession", QueryRequest(Level.STUDY, {"AccessionNumber": "ACC00001234"}, limit=100)),
    ("series of a study", QueryRequest(Level.SERIES, {"StudyInstanceUID": "1.2.826.0.1.3680043.10.1.777"})),
    ("instances of a study", QueryRequest(Level.IMAGE, {"StudyInstanceUID": "1.2.826.0.1.3680043.10.1.777"})),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--per-study", type=int, default=20)
    parser.add_argument("--database-url")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='cloudfilm-scale-')}/index.sqlite3"
    engine = make_engine(url)
    upgrade(engine)
    studies = args.instances // args.per_study
    started = time.perf_counter()
    bulk_load(engine, studies=studies, instances_per_study=args.per_study)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    print(f"loaded {studies * args.per_study:,} instances in {studies:,} studies "
          f"({engine.dialect.name}) in {time.perf_counter() - started:.0f} s")
    print(f"{'query':<28} {'p50 ms':>8} {'p95 ms':>8} {'rows':>5}  plan")
    for label, request in QUERIES:
        times = []
        rows = 0
        for _ in range(args.repeat):
            t = time.perf_counter()
            rows = len(list(run_query(engine, request)))
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        stmt, _, _ = compile_query(request, engine.dialect.name)
        plan = _plan(engine, stmt)
        print(f"{label:<28} {statistics.median(times):>8.1f} {times[int(len(times) * 0.95) - 1]:>8.1f} "
              f"{rows:>5}  {plan}")


def _plan(engine, stmt) -> str:  # type: ignore[no-untyped-def]
    compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}").all()
            return "; ".join(r[-1] for r in rows)
        rows = conn.exec_driver_sql(f"EXPLAIN {compiled}").all()
        return " | ".join(r[0].strip() for r in rows if "Scan" in r[0])[:160]


if __name__ == "__main__":
    main()
