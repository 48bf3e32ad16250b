"""C-STORE throughput: cloudfilm vs Orthanc vs a bare pynetdicom receiver, measured side by side.

DCMTK's ``storescu`` sends a synthetic 200-slice 512x512 CT study (~100 MB) over one association,
then split over N parallel associations, to each receiver started fresh on loopback for every
measurement:

- ``cloudfilm``: the archive's DICOM listener on its embedded default (SQLite + filesystem);
- ``orthanc``: Orthanc from Debian with a temporary configuration (its default SQLite + filesystem);
- ``bare``: pynetdicom only, writing each received dataset to a file (the Python floor);
- ``bare-fsync``: the same, plus ``fsync`` of each file: the floor for a receiver that, like
  cloudfilm, acknowledges only what is durable.

Prints the median of ``--runs`` runs per receiver and mode (instances/s, MB/s) and the ratios the
issue sets goals for. ``--scaling`` also measures cloudfilm with 1, 2, 4 and 8 associations.
``--processes N`` instead compares ``cloudfilm serve`` with one process and with N (issue 16), both on
PostgreSQL and running side by side, with the bare receiver beside them.

    .venv/bin/python benchmarks/dimse_bench.py [--runs 3] [--slices 200] [--parallel 4] [--scaling]
    .venv/bin/python benchmarks/dimse_bench.py --processes 2 --runs 5 [--slices 200] [--parallel 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.net import free_port  # noqa: E402

RECEIVERS = ("cloudfilm", "orthanc", "bare", "bare-fsync")
MAX_PDU = 1024 * 1024  # cloudfilm's default CLOUDFILM_DICOM_MAX_PDU, also given to the bare receiver


@dataclass
class Sample:
    receiver: str
    associations: int
    seconds: float



def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the receiver exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


# --- receivers, each run in its own process -------------------------------------------------------


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()


def serve_cloudfilm(data_dir: Path, port: int) -> None:
    from pacs.archive import Archive
    from pacs.dimse import DicomListener
    from pacs.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=None, storage_url=None, dicom_port=port,
                        dicom_host="127.0.0.1", ae_title="CLOUDFILM", dicom_max_pdu=MAX_PDU)
    with Archive.open(settings) as archive:
        listener = DicomListener(archive)
        listener.start()
        _wait_for_sigterm()
        listener.stop()


def serve_bare(out_dir: Path, port: int, fsync: bool) -> None:
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt

    _config.LOG_HANDLER_LEVEL = "none"
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_store(event: object) -> int:
        data = event.encoded_dataset()  # type: ignore[attr-defined]
        path = out_dir / f"{event.request.AffectedSOPInstanceUID}.dcm"  # type: ignore[attr-defined]
        with open(path, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        return 0x0000

    ae = AE(ae_title="BARE")
    ae.maximum_pdu_size = MAX_PDU
    ae.maximum_associations = 64
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(str(cx.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    _wait_for_sigterm()
    server.shutdown()


ORTHANC_CONFIG = {
    "Name": "cloudfilm-bench", "DicomAet": "ORTHANC", "DicomCheckCalledAet": False, "RemoteAccessAllowed": False,
    "AuthenticationEnabled": False, "Plugins": [], "HttpServerEnabled": True, "DicomServerEnabled": True,
}


@contextlib.contextmanager
def receiver(name: str, work: Path) -> Iterator[tuple[int, str, Path]]:
    """Start ``name`` fresh in ``work``; yields (port, called AE title, data directory)."""
    port = free_port()
    data = work / "data"
    if name == "orthanc":
        http_port = free_port()
        config = {**ORTHANC_CONFIG, "StorageDirectory": str(data), "IndexDirectory": str(data),
                  "DicomPort": port, "HttpPort": http_port}
        (work / "orthanc.json").write_text(json.dumps(config))
        cmd = ["Orthanc", str(work / "orthanc.json")]
        aet = "ORTHANC"
    else:
        cmd = [sys.executable, __file__, "--serve", name, str(data), str(port)]
        aet = "CLOUDFILM" if name == "cloudfilm" else "BARE"
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc)
        if name == "orthanc":
            wait_for_port(http_port, proc)
        yield port, aet, data
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def stored_count(name: str, data: Path) -> int:
    if name == "cloudfilm":
        with contextlib.closing(sqlite3.connect(data / "index.sqlite3")) as db:
            return int(db.execute("SELECT count(*) FROM instances").fetchone()[0])
    if name == "orthanc":
        return -1  # checked through REST while running: see measure()
    return len(list(data.glob("*.dcm")))


def orthanc_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/statistics", timeout=10) as rsp:
        return int(json.load(rsp)["CountInstances"])


def send(port: int, aet: str, files: Sequence[Path], associations: int) -> float:
    """Seconds for ``associations`` parallel storescu processes to store ``files``."""
    groups = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", aet, "127.0.0.1", str(port), *map(str, group)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for group in groups]
    outputs = [p.communicate()[0] for p in procs]
    elapsed = time.perf_counter() - started
    for p, out in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {out.decode(errors='replace')[-2000:]}")
    return elapsed


def measure(name: str, files: Sequence[Path], associations: int, scratch: Path) -> float:
    # Flush what earlier measurements left dirty (a non-syncing receiver's 105 MB, removed trees):
    # otherwise the next receiver's first fsyncs pay for writing it back.
    os.sync()
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    try:
        with receiver(name, work) as (port, aet, data):
            seconds = send(port, aet, files, associations)
            if name == "orthanc":
                http_port = json.loads((work / "orthanc.json").read_text())["HttpPort"]
                count = orthanc_count(http_port)
        if name != "orthanc":
            count = stored_count(name, data)
        if count != len(files):
            raise RuntimeError(f"{name} stored {count} of {len(files)} instances")
        return seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--receivers", default=",".join(RECEIVERS))
    parser.add_argument("--scaling", action="store_true", help="also cloudfilm with 1, 2, 4, 8 associations")
    parser.add_argument("--processes", type=int, metavar="N",
                        help="instead: `cloudfilm serve` on PostgreSQL with 1 process against N, and the bare "
                        "receiver, over --parallel associations, round by round in turn")
    parser.add_argument("--serve", nargs=3, metavar=("RECEIVER", "DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes:
        compare_processes(args.processes, args.runs, args.slices, args.parallel)
        return
    if args.serve:
        kind, directory, port = args.serve
        if kind == "cloudfilm":
            serve_cloudfilm(Path(directory), int(port))
        else:
            serve_bare(Path(directory), int(port), fsync=kind == "bare-fsync")
        return

    from tests.factories import PATIENTS, make_ct_study, write_files

    receivers = [r for r in args.receivers.split(",") if r]
    scratch = Path(tempfile.mkdtemp(prefix="cloudfilm-dimse-bench-"))
    try:
        files = write_files(make_ct_study(PATIENTS[0], n_slices=args.slices, rows=512, cols=512, seed=2024),
                            scratch / "study")
        megabytes = sum(p.stat().st_size for p in files) / 1e6
        modes = sorted({1, args.parallel})
        samples: list[Sample] = []
        for run in range(args.runs):
            for name in receivers:
                for n in modes:
                    seconds = measure(name, files, n, scratch)
                    samples.append(Sample(name, n, seconds))
                    print(f"run {run + 1}: {name:10s} {n} association(s): {seconds:6.2f} s", file=sys.stderr)
            if args.scaling and "cloudfilm" in receivers:
                for n in (2, 8):
                    if n not in modes:
                        samples.append(Sample("cloudfilm", n, measure("cloudfilm", files, n, scratch)))
        report(samples, len(files), megabytes, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compare_processes(processes: int, runs: int, slices: int, associations: int) -> None:
    """C-STORE of a ``slices`` study over ``associations`` associations to ``serve`` with 1 and with
    ``processes`` processes (both on PostgreSQL + filesystem, both running throughout) and to the bare
    receivers (one process each, with and without fsync); every round sends a new study to each, in an
    order that turns each round."""
    from benchmarks.serve_processes import serving
    from tests.factories import PATIENTS, make_ct_study, write_files

    scratch = Path(tempfile.mkdtemp(prefix="cloudfilm-dimse-procs-"))
    seconds: dict[str, list[float]] = {}
    try:
        with contextlib.ExitStack() as stack:
            one = stack.enter_context(serving(1, scratch / "one"))
            many = stack.enter_context(serving(processes, scratch / "many"))
            bare: dict[str, tuple[int, Path]] = {}
            for name in ("bare", "bare-fsync"):
                (scratch / name).mkdir()
                port, _aet, directory = stack.enter_context(receiver(name, scratch / name))
                bare[name] = (port, directory)
            targets: list[tuple[str, int, str]] = [
                ("bare", bare["bare"][0], "BARE"), ("bare-fsync", bare["bare-fsync"][0], "BARE"),
                (one.label, one.dicom_port, "CLOUDFILM"), (many.label, many.dicom_port, "CLOUDFILM")]
            for run in range(runs):
                study = make_ct_study(PATIENTS[run % len(PATIENTS)], n_slices=slices, rows=512, cols=512,
                                      seed=3000 + run)
                files = write_files(study, scratch / f"study-{run}")
                megabytes = sum(p.stat().st_size for p in files) / 1e6
                order = targets[run % len(targets):] + targets[:run % len(targets)]
                for label, port, aet in order:
                    os.sync()
                    took = send(port, aet, files, associations)
                    seconds.setdefault(label, []).append(took)
                    print(f"run {run + 1}: {label:14s} {took:6.2f} s", file=sys.stderr)
                shutil.rmtree(scratch / f"study-{run}")
            for served in (one, many):
                if served.instances() != runs * slices:
                    raise RuntimeError(f"{served.label} stored {served.instances()} of {runs * slices} instances")
            for name, (_port, directory) in bare.items():
                if len(list(directory.glob("*.dcm"))) != runs * slices:
                    raise RuntimeError(f"the {name} receiver lost instances")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    load = os.getloadavg()
    print(f"\n{slices} CT instances 512x512, {megabytes:.0f} MB, over {associations} associations; median of "
          f"{runs} rounds; {os.cpu_count()} CPU cores; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print("| receiver | seconds | instances/s | MB/s |")
    print("|---|---:|---:|---:|")
    for label, secs in medians.items():
        print(f"| {label} | {secs:.2f} | {slices / secs:.0f} | {megabytes / secs:.0f} |")
    one_s, many_s, bare_s, fsync_s = (medians[k] for k in (one.label, many.label, "bare", "bare-fsync"))
    print(f"\n{processes} processes: {one_s / many_s:.2f}x one process's throughput (goal >= 1.6); "
          f"1 process {one_s / bare_s:.2f}x, {processes} processes {many_s / bare_s:.2f}x the bare receiver's time "
          f"({one_s / fsync_s:.2f}x and {many_s / fsync_s:.2f}x bare-fsync's)")


def report(samples: list[Sample], instances: int, megabytes: float, runs: int) -> None:
    medians: dict[tuple[str, int], float] = {}
    for key in sorted({(s.receiver, s.associations) for s in samples}, key=lambda k: (RECEIVERS.index(k[0]), k[1])):
        medians[key] = statistics.median(s.seconds for s in samples if (s.receiver, s.associations) == key)
    print(f"\n{instances} CT instances 512x512, {megabytes:.0f} MB; median of {runs} runs; "
          f"{os.cpu_count()} CPU cores\n")
    print("| receiver | associations | seconds | instances/s | MB/s |")
    print("|---|---:|---:|---:|---:|")
    for (name, n), secs in medians.items():
        print(f"| {name} | {n} | {secs:.2f} | {instances / secs:.0f} | {megabytes / secs:.0f} |")
    print()
    for n in sorted({n for _name, n in medians}):
        cf = medians.get(("cloudfilm", n))
        if cf is None:
            continue
        parts: list[str] = []
        if ("orthanc", n) in medians:
            parts.append(f"cloudfilm is {medians[('orthanc', n)] / cf:.2f}x faster than Orthanc (goal >= 5 at 1)")
        if ("bare", n) in medians:
            parts.append(f"{cf / medians[('bare', n)]:.2f}x the bare receiver's time (goal <= 1.25 at 1)")
        if ("bare-fsync", n) in medians:
            parts.append(f"{cf / medians[('bare-fsync', n)]:.2f}x bare-fsync's")
        print(f"{n} association(s): " + "; ".join(parts))


if __name__ == "__main__":
    main()
