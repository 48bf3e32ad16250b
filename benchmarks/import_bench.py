"""``cloudfilm import`` throughput on the embedded default (SQLite + filesystem).

Generates 1,000 synthetic 512x512 CT instances (5 studies x 200 slices) once, then imports them
into a fresh archive several times and prints instances/s and MB/s (median of the runs).

    .venv/bin/python benchmarks/import_bench.py [--runs 3] [--instances 1000] [--jobs 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import PATIENTS, make_ct_study, write_files  # noqa: E402

CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudfilm-import-bench-"))
    try:
        source = work / "source"
        per_study = 200
        made = 0
        study = 0
        while made < args.instances:
            n = min(per_study, args.instances - made)
            write_files(make_ct_study(PATIENTS[study % len(PATIENTS)], n_slices=n, rows=512, cols=512,
                                      seed=1000 + study), source / f"study{study}")
            made += n
            study += 1
        total_bytes = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        rates: list[float] = []
        for run in range(args.runs):
            data = work / f"data{run}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
            env["CLOUDFILM_DATA_DIR"] = str(data)
            subprocess.run([CLOUDFILM, "db", "upgrade"], env=env, check=True, capture_output=True)
            started = time.perf_counter()
            proc = subprocess.run([CLOUDFILM, "import", "--jobs", str(args.jobs), str(source)], env=env,
                                  capture_output=True, text=True, check=False)
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                raise SystemExit(f"import failed: {proc.stdout}{proc.stderr}")
            rates.append(args.instances / elapsed)
            shutil.rmtree(data)
        median = statistics.median(rates)
        mb_s = median * total_bytes / args.instances / 1e6
        print(f"cloudfilm import, {args.instances} CT instances 512x512 "
              f"({total_bytes / 1e6:.0f} MB), SQLite + filesystem, {os.cpu_count()} CPUs, --jobs {args.jobs}")
        print(f"{'run':>5} {'instances/s':>12}")
        for i, rate in enumerate(rates, 1):
            print(f"{i:>5} {rate:>12.1f}")
        print(f"median: {median:.1f} instances/s, {mb_s:.1f} MB/s (goal >= 150 instances/s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
