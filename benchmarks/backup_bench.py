"""Backup and restore times: an archive of N instances (SQLite + filesystem) backed up, backed up again
with nothing new (incremental), restored into SQLite + filesystem and into PostgreSQL + S3
(SeaweedFS), through the ``cloudfilm`` commands an operator runs.

    .venv/bin/python benchmarks/backup_bench.py --instances 10000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pacs.archive import Archive  # noqa: E402
from pacs.settings import Settings  # noqa: E402
from tests.cli import run_cli, settings_env  # noqa: E402
from tests.factories import PATIENTS, make_ct_study, to_bytes  # noqa: E402
from tests.pg import postgres_available, temporary_database  # noqa: E402
from tests.s3server import run_s3_server  # noqa: E402

SLICES = 100  # instances per study


def _load(settings: Settings, instances: int, rows: int) -> int:
    """Store ``instances`` CT slices (``rows`` x ``rows``) through the ingest service; returns bytes."""
    total = 0
    with Archive.open(settings) as archive:
        for n in range((instances + SLICES - 1) // SLICES):
            study = make_ct_study(PATIENTS[n % len(PATIENTS)], n_slices=min(SLICES, instances - n * SLICES),
                                  rows=rows, cols=rows, seed=90_000 + n)  # fmt: skip
            for ds in study:
                data = to_bytes(ds)
                total += len(data)
                assert archive.ingest.store_bytes(data).ok
    return total


def _timed(label: str, args: list[str], env: dict[str, str], rows: list[tuple[str, float, str]]) -> None:
    started = time.monotonic()
    done = run_cli(*args, env=env, timeout=3600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr}")
    rows.append((label, seconds, done.stdout.strip().splitlines()[-1]))
    print(f"{label}: {seconds:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=128, help="image size (rows = columns)")
    args = parser.parse_args()
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="cloudfilm-backup-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        source = Settings(data_dir=work / "source")
        started = time.monotonic()
        size = _load(source, args.instances, args.rows)
        print(f"loaded {args.instances} instances ({size / 1e6:.0f} MB) in {time.monotonic() - started:.0f} s",
              flush=True)
        subprocess.run(["sync"], check=True)
        dest = work / "backup"
        _timed("backup (full)", ["backup", str(dest)], settings_env(source), rows)
        _timed("backup (incremental, nothing new)", ["backup", str(dest)], settings_env(source), rows)
        _timed("restore into SQLite + filesystem", ["restore", str(dest)],
               settings_env(Settings(data_dir=work / "restored")), rows)  # fmt: skip
        _timed("fsck --deep of the restored archive", ["fsck", "--deep"],
               settings_env(Settings(data_dir=work / "restored")), rows)  # fmt: skip
        if postgres_available():
            s3 = stack.enter_context(run_s3_server(work))
            url = stack.enter_context(temporary_database("cloudfilm_backup_bench"))
            target = Settings(data_dir=work / "grown", database_url=url, storage_url="s3://restored",
                              s3_endpoint=s3.endpoint, s3_access_key=s3.access_key, s3_secret_key=s3.secret_key)
            _timed("restore into PostgreSQL + S3 (SeaweedFS)", ["restore", str(dest)], settings_env(target), rows)
    print(f"\n{args.instances} instances, {size / 1e6:,.0f} MB, {os.cpu_count()} CPU cores\n")
    print("| step | seconds | output |\n|---|---:|---|")
    for label, seconds, output in rows:
        print(f"| {label} | {seconds:.1f} | {output} |")


if __name__ == "__main__":
    main()
