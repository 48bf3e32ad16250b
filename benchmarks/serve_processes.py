"""``cloudfilm serve`` with a given number of processes on its own PostgreSQL database and data
directory, for the ``--processes`` comparisons of ``dimse_bench.py`` and ``dicomweb_bench.py``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pacs.index.models import Instance  # noqa: E402
from tests.net import free_port  # noqa: E402
from tests.pg import temporary_database  # noqa: E402

CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))


@dataclass(frozen=True)
class Served:
    processes: int
    http_url: str
    dicom_port: int
    database_url: str
    data_dir: Path

    @property
    def label(self) -> str:
        return f"cloudfilm x{self.processes}"

    def instances(self) -> int:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(Instance)).scalar_one())
        finally:
            engine.dispose()


@contextlib.contextmanager
def serving(processes: int, work: Path, **settings: str) -> Iterator[Served]:
    """``cloudfilm serve --processes N`` (logins off, no AI worker) until its banner is printed."""
    work.mkdir(parents=True, exist_ok=True)
    with temporary_database("cloudfilm_bench") as url:
        http, dicom = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
        env.update({"CLOUDFILM_DATA_DIR": str(work / "data"), "CLOUDFILM_DATABASE_URL": url,
                    "CLOUDFILM_HTTP_PORT": str(http), "CLOUDFILM_DICOM_PORT": str(dicom),
                    "CLOUDFILM_DICOM_HOST": "127.0.0.1", "CLOUDFILM_AUTH_DISABLED": "true",
                    "CLOUDFILM_WORKER_CONCURRENCY": "0", "CLOUDFILM_LOG_LEVEL": "WARNING",
                    "CLOUDFILM_PROCESSES": str(processes), **settings})
        log = work / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([CLOUDFILM, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while "is ready" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"cloudfilm serve did not start:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.2)
            yield Served(processes, f"http://127.0.0.1:{http}", dicom, url, work / "data")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
