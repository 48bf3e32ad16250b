"""Change feed costs: writing outbox rows with and without the feed's indexes (what ingest pays per
instance), numbering them (the sequencer) and reading pages of the feed.

    .venv/bin/python benchmarks/changefeed_bench.py --events 100000 [--postgres URL]

Prints one table per database; each figure is the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, delete, insert, text

from pacs.events import latest, read_feed, sequence_pending
from pacs.index.db import make_engine, upgrade, utcnow
from pacs.index.models import OutboxEvent

_FEED_INDEXES = ("ix_outbox_seq", "ix_outbox_sop", "ix_outbox_unsequenced")


def _rows(n: int, offset: int) -> list[dict[str, object]]:
    now = utcnow()
    return [{"event": "instance.stored", "study_uid": f"1.2.{(offset + i) // 200}", "series_uid": f"1.2.3.{i // 50}",
             "sop_uid": f"1.2.3.4.{offset + i}", "created_at": now} for i in range(n)]  # fmt: skip


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _write(engine: Engine, n: int, batch: int = 64) -> float:
    """Seconds to insert ``n`` outbox rows in transactions of ``batch`` (as ingest's group commits do)."""
    offset = int(time.time_ns() % 10**12)
    started = time.perf_counter()
    for start in range(0, n, batch):
        with engine.begin() as conn:
            conn.execute(insert(OutboxEvent), _rows(min(batch, n - start), offset + start))
    return time.perf_counter() - started


def bench(url: str, events: int, runs: int) -> list[tuple[str, str]]:
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(delete(OutboxEvent))
    with_idx = statistics.median(_write(engine, 5000) for _ in range(runs))
    with engine.begin() as conn:
        conn.execute(delete(OutboxEvent))
        for name in _FEED_INDEXES:
            conn.execute(text(f"DROP INDEX {name}"))
    without = statistics.median(_write(engine, 5000) for _ in range(runs))
    with engine.begin() as conn:
        conn.execute(delete(OutboxEvent))
    engine.dispose()
    engine = make_engine(url)
    upgrade_indexes(engine)

    with engine.begin() as conn:
        for start in range(0, events, 10_000):
            conn.execute(insert(OutboxEvent), _rows(min(10_000, events - start), start))
    numbering = _timed(lambda: sequence_pending(engine))
    if engine.dialect.name == "postgresql":  # statistics as autovacuum keeps them on a live archive
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE outbox"))
    since = events - 100
    pages = sorted(_timed(lambda: read_feed(engine, since=since, limit=100)) for _ in range(max(runs, 20)))
    meta = sorted(_timed(lambda: read_feed(engine, since=0, limit=100)) for _ in range(max(runs, 20)))
    newest = sorted(_timed(lambda: latest(engine)) for _ in range(max(runs, 20)))
    engine.dispose()
    return [
        ("5,000 outbox rows in commits of 64, with the feed's 3 indexes", f"{with_idx * 1000:.0f} ms "
         f"({with_idx / 5000 * 1e6:.0f} us/row)"),
        ("the same without them", f"{without * 1000:.0f} ms ({without / 5000 * 1e6:.0f} us/row)"),
        (f"numbering {events:,} waiting events (sequencer)", f"{numbering:.2f} s ({events / numbering:,.0f}/s)"),
        (f"a page of 100 at the end of {events:,} events p50", f"{pages[len(pages) // 2] * 1000:.1f} ms"),
        ("a page of 100 at the start p50", f"{meta[len(meta) // 2] * 1000:.1f} ms"),
        ("latest p50", f"{newest[len(newest) // 2] * 1000:.1f} ms"),
    ]


def upgrade_indexes(engine: Engine) -> None:
    """Put back the indexes the comparison dropped (as migration 0006 creates them)."""
    where = "WHERE seq IS NULL"
    with engine.begin() as conn:
        conn.execute(text("CREATE UNIQUE INDEX ix_outbox_seq ON outbox (seq)"))
        conn.execute(text("CREATE INDEX ix_outbox_sop ON outbox (sop_uid)"))
        conn.execute(text(f"CREATE INDEX ix_outbox_unsequenced ON outbox (id) {where}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", help="an empty PostgreSQL database URL to measure too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        targets = [("SQLite", f"sqlite:///{Path(tmp) / 'index.sqlite3'}")]
        if args.postgres:
            targets.append(("PostgreSQL", args.postgres))
        for name, url in targets:
            print(f"\n{name}")
            print(f"| {'what':<64} | result |\n|{'-' * 66}|--------|")
            for what, result in bench(url, args.events, args.runs):
                print(f"| {what:<64} | {result} |")


if __name__ == "__main__":
    main()
