"""DICOMweb side by side: cloudfilm on the filesystem, cloudfilm on S3 (SeaweedFS), Orthanc.

    .venv/bin/python benchmarks/dicomweb_bench.py [--studies 5000] [--per-study 20] [--runs 3]
                                                  [--no-orthanc] [--no-s3]

cloudfilm's index gets ``--studies`` x ``--per-study`` synthetic instances bulk-loaded (rows only,
for QIDO), then two real studies through the ingest path: a 100-slice 512x512 CT (retrieve, frames,
rendered) and a 1,000-instance study (metadata). Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``)
gets the same two studies and one small instance per synthetic series with the same patient
names, dates and modalities, so its study searches run over the same studies. The servers run at
once, each in its own process, and are measured round by round in turn (so load on the machine
weighs on every column alike); requests are sequential over loopback (httpx; the study retrieve
is read by ``curl``, since a Python client would be the bottleneck, 7 times per round). Every figure
is the median over ``--runs`` rounds; latencies are p50/p95 within a round.

``--processes N`` instead compares ``cloudfilm serve`` with one process and with N (issue 16), both on
PostgreSQL and running side by side: ``--readers`` curl clients at once (16) each make ``--requests``
WADO-RS instance retrieves, then as many QIDO-RS study searches; requests/s, median of ``--runs``.

    .venv/bin/python benchmarks/dicomweb_bench.py --processes 2 --runs 5 [--readers 16] [--requests 50]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom.dataset import Dataset  # noqa: E402
from sqlalchemy import select  # noqa: E402

from benchmarks.bulkload import bulk_load  # noqa: E402
from pacs.archive import Archive  # noqa: E402
from pacs.index.models import Series, Study  # noqa: E402
from pacs.settings import Settings  # noqa: E402
from tests.factories import PATIENTS, make_ct_study, to_bytes  # noqa: E402
from tests.net import free_port  # noqa: E402
from tests.s3server import run_s3_server  # noqa: E402

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
NAME_PREFIXES = ["Smi", "Ros", "Nov", "Ber", "Sil", "Jen", "Hor", "Dub", "Kow", "Nak"]
MODALITIES = ["MR", "CR", "US", "DX"]
RETRIEVES = 7  # study retrieves per round (their median is the round's figure)
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'
STUDY_ACCEPT = 'multipart/related; type="application/dicom"'
FS, S3, ORTHANC_COLUMN = "cloudfilm, filesystem", "cloudfilm, S3 (SeaweedFS)", "Orthanc 1.10 + DICOMweb 1.7, filesystem"



#: Per DICOMweb root: the processes whose CPU time a study retrieve costs (the server; on S3 also SeaweedFS).
SERVER_PIDS: dict[str, list[int]] = {}
STORE_PIDS: dict[str, list[int]] = {}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (all their threads) so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def weed_pid(endpoint: str) -> list[int]:
    """The SeaweedFS process serving the S3 ``endpoint`` (host:port)."""
    port = endpoint.rsplit(":", 1)[1]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as fh:
                if f"-s3.port={port}".encode() in fh.read().split(b"\0"):
                    return [int(entry)]
    return []


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def cloudfilm_server(settings: Settings) -> Iterator[str]:
    """``cloudfilm serve`` on a free port over ``settings``' data; yields the DICOMweb root."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    env.update({"CLOUDFILM_DATA_DIR": str(settings.data_dir), "CLOUDFILM_HTTP_PORT": str(port),
                "CLOUDFILM_AUTH_DISABLED": "true", "CLOUDFILM_DICOM_ENABLED": "false",
                "CLOUDFILM_WORKER_CONCURRENCY": "0", "CLOUDFILM_LOG_LEVEL": "WARNING"})
    for name in ("storage_url", "s3_endpoint", "s3_access_key"):
        value = getattr(settings, name)
        if value:
            env[f"CLOUDFILM_{name.upper()}"] = str(value)
    if settings.s3_secret_key is not None:
        env["CLOUDFILM_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    cli = Path(sys.executable).with_name("cloudfilm")
    proc = subprocess.Popen([str(cli), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
        SERVER_PIDS[f"http://127.0.0.1:{port}/dicomweb/"] = [proc.pid]
        yield f"http://127.0.0.1:{port}/dicomweb/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def orthanc_server(workdir: Path) -> Iterator[str]:
    """Orthanc with its DICOMweb plugin on free ports; yields the DICOMweb root."""
    port = free_port()
    storage = workdir / "orthanc-db"
    storage.mkdir(parents=True, exist_ok=True)
    config = {"Name": "bench", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
              "HttpPort": port, "DicomPort": free_port(), "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": [ORTHANC_DICOMWEB], "StorageCompression": False,
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}  # fmt: skip
    cfg = workdir / "orthanc.json"
    cfg.write_text(json.dumps(config))
    proc = subprocess.Popen([ORTHANC, str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/system", proc)
        SERVER_PIDS[f"http://127.0.0.1:{port}/dicom-web/"] = [proc.pid]
        yield f"http://127.0.0.1:{port}/dicom-web/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class RealData:
    ct: list[Dataset]  # 100 x 512x512
    big: list[Dataset]  # 1,000 instances

    @property
    def all(self) -> list[Dataset]:
        return [*self.ct, *self.big]

    def instance_path(self, i: int) -> str:
        ds = self.ct[i % len(self.ct)]
        return f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def real_data() -> RealData:
    ct = make_ct_study(PATIENTS[0], n_slices=100, rows=512, cols=512, seed=7, lesion="random")
    big = make_ct_study(PATIENTS[1], n_slices=1000, rows=32, cols=32, seed=8, study_description="CT 1000")
    return RealData(ct, big)


def ingest(settings: Settings, data: RealData, synthetic: tuple[int, int] | None) -> list[dict[str, str]]:
    """Fill an archive; returns the synthetic studies' key values (for loading Orthanc alike)."""
    rows: list[dict[str, str]] = []
    with Archive.open(settings) as archive:
        if synthetic is not None:
            bulk_load(archive.engine, studies=synthetic[0], instances_per_study=synthetic[1])
            with archive.engine.connect() as conn:
                stmt = (select(Study.study_uid, Study.patient_name, Study.patient_id, Study.study_date,
                               Study.accession_number, Series.series_uid, Series.modality)
                        .join(Series, Series.study_fk == Study.id))  # fmt: skip
                rows = [dict(r._mapping) for r in conn.execute(stmt)]
        for ds in data.all:
            result = archive.ingest.store_bytes(to_bytes(ds))
            assert result.ok, result.reason
    return rows


def tiny_instance(row: dict[str, str], n: int) -> bytes:
    """A small CT instance carrying one synthetic series' study attributes."""
    ds = make_ct_study(n_slices=1, rows=8, cols=8, seed=n, study_uid=row["study_uid"])[0]
    ds.PatientName, ds.PatientID = row["patient_name"], row["patient_id"]
    ds.StudyDate, ds.AccessionNumber, ds.Modality = row["study_date"], row["accession_number"], row["modality"]
    ds.SeriesInstanceUID = row["series_uid"]
    return to_bytes(ds)


def load_orthanc(base: str, data: RealData, synthetic_rows: list[dict[str, str]]) -> None:
    rest = base.removesuffix("dicom-web/")
    with httpx.Client(timeout=60) as client:
        def post(body: bytes) -> None:
            for attempt in range(3):  # Orthanc's HTTP server now and then drops a kept-alive connection
                try:
                    resp = client.post(f"{rest}instances", content=body, headers={"Content-Type": "application/dicom"})
                except httpx.TransportError:
                    if attempt == 2:
                        raise
                    continue
                resp.raise_for_status()  # storing the same instance again is harmless ("AlreadyStored")
                return

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, (to_bytes(ds) for ds in data.all)))
            list(pool.map(post, (tiny_instance(r, i) for i, r in enumerate(synthetic_rows))))


# --- measurements ---------------------------------------------------------------------------------


def timed_get(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    resp = client.get(url, headers=headers)
    resp.raise_for_status()
    _ = resp.content
    return (time.perf_counter() - start) * 1000


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Figures:
    """Per metric, the value of each round; reported as the median over rounds."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.values.setdefault(metric, []).append(value)

    def get(self, metric: str) -> float | None:
        got = self.values.get(metric)
        return statistics.median(got) if got else None


def latency(figures: Figures, metric: str, client: httpx.Client, urls: list[str], headers: dict[str, str]) -> None:
    times = [timed_get(client, u, headers) for u in urls]
    figures.add(f"{metric} p50", p(times, 0.5))
    figures.add(f"{metric} p95", p(times, 0.95))


def qido(figures: Figures, client: httpx.Client, base: str, rounds_of: int) -> None:
    json_headers = {"Accept": "application/dicom+json"}
    names = [f"{base}studies?PatientName={NAME_PREFIXES[i % len(NAME_PREFIXES)]}*&limit=100" for i in range(rounds_of)]
    dates = [f"{base}studies?StudyDate=20{10 + i % 15:02d}{1 + i % 12:02d}01-20{10 + i % 15:02d}{1 + i % 12:02d}28"
             f"&limit=100" for i in range(rounds_of)]
    mods = [f"{base}studies?ModalitiesInStudy={MODALITIES[i % len(MODALITIES)]}&limit=100" for i in range(rounds_of)]
    latency(figures, "QIDO studies by patient name prefix", client, names, json_headers)
    latency(figures, "QIDO studies by date range", client, dates, json_headers)
    latency(figures, "QIDO studies by modality", client, mods, json_headers)


def retrieve_rate(url: str) -> float:
    """MB/s of one study retrieve, read by curl (a native client: Python's own would be the bottleneck)."""
    out = subprocess.run(["curl", "--silent", "--fail", "--output", "/dev/null", "--write-out",
                          "%{size_download} %{time_total}", "--header", f"Accept: {STUDY_ACCEPT}", url],
                         capture_output=True, text=True, check=True, timeout=600).stdout  # fmt: skip
    size, seconds = out.split()
    return float(size) / 1e6 / float(seconds)


def round_of(figures: Figures, base: str, data: RealData, *, with_qido: bool, requests: int) -> None:
    with httpx.Client(timeout=120) as client:
        if with_qido:
            qido(figures, client, base, requests)
        big = data.big[0].StudyInstanceUID
        latency(figures, "metadata of a 1,000-instance study", client, [f"{base}studies/{big}/metadata"] * 5,
                {"Accept": "application/dicom+json", "Accept-Encoding": "gzip"})
        study_url = f"{base}studies/{data.ct[0].StudyInstanceUID}"
        # One retrieve takes ~40 ms and varies by +-30 % from one to the next: the median of several.
        # The CPU time the server spends on them does not depend on what else the machine runs.
        server, store = SERVER_PIDS.get(base, []), STORE_PIDS.get(base, [])
        cpu_before = cpu_seconds(server), cpu_seconds(store)
        rates = [retrieve_rate(study_url) for _ in range(RETRIEVES)]
        figures.add("WADO-RS study retrieve MB/s", statistics.median(rates))
        if server:
            figures.add("server CPU per study retrieve", (cpu_seconds(server) - cpu_before[0]) * 1000 / RETRIEVES)
        if store:
            figures.add("object store CPU per study retrieve", (cpu_seconds(store) - cpu_before[1]) * 1000 / RETRIEVES)
        latency(figures, "single frame", client, [f"{base}{data.instance_path(i)}/frames/1" for i in range(requests)],
                {"Accept": FRAME_ACCEPT})
        latency(figures, "rendered JPEG", client, [f"{base}{data.instance_path(i)}/rendered" for i in range(requests)],
                {"Accept": "image/jpeg"})


@dataclass
class Target:
    name: str
    base: str
    with_qido: bool
    figures: Figures = field(default_factory=Figures)


def warm_up(target: Target, data: RealData) -> None:
    """First touches (imports, caches, connections) are not measured."""
    with httpx.Client(timeout=120) as warm:
        warm.get(f"{target.base}{data.instance_path(0)}/rendered", headers={"Accept": "image/jpeg"})
        warm.get(f"{target.base}studies?limit=1", headers={"Accept": "application/dicom+json"})
    retrieve_rate(f"{target.base}studies/{data.ct[0].StudyInstanceUID}")


def measure(targets: list[Target], data: RealData, *, runs: int, requests: int) -> None:
    """Rounds over all targets in turn, so load on the machine weighs on every column alike."""
    for target in targets:
        warm_up(target, data)
    for _ in range(runs):
        for target in targets:
            round_of(target.figures, target.base, data, with_qido=target.with_qido, requests=requests)


# --- report -----------------------------------------------------------------------------------------

ROWS: list[tuple[str, str, str]] = [
    ("QIDO studies by patient name prefix p50", "ms", "≤ 20"),
    ("QIDO studies by patient name prefix p95", "ms", ""),
    ("QIDO studies by date range p50", "ms", "≤ 20"),
    ("QIDO studies by date range p95", "ms", ""),
    ("QIDO studies by modality p50", "ms", "≤ 20"),
    ("QIDO studies by modality p95", "ms", ""),
    ("metadata of a 1,000-instance study p50", "ms", "≤ 300"),
    ("WADO-RS study retrieve MB/s", "MB/s", "FS ≥ 1.2x Orthanc; S3 ≥ Orthanc, ≥ 0.6x FS"),
    ("server CPU per study retrieve", "ms", "(load-independent)"),
    ("object store CPU per study retrieve", "ms", "(SeaweedFS)"),
    ("single frame p50", "ms", "≤ 10; S3 ≤ 1.5x FS"),
    ("rendered JPEG p50", "ms", "≤ 30"),
]


# (label, numerator column, numerator metric, denominator column, denominator metric, goal)
RATIOS: list[tuple[str, str, str, str, str, str]] = [
    ("study retrieve, cloudfilm FS / Orthanc", FS, "WADO-RS study retrieve MB/s", ORTHANC_COLUMN,
     "WADO-RS study retrieve MB/s", "≥ 1.2"),
    ("study retrieve, cloudfilm S3 / Orthanc", S3, "WADO-RS study retrieve MB/s", ORTHANC_COLUMN,
     "WADO-RS study retrieve MB/s", "≥ 1.0"),
    ("study retrieve, cloudfilm S3 / cloudfilm FS", S3, "WADO-RS study retrieve MB/s", FS,
     "WADO-RS study retrieve MB/s", "≥ 0.6"),
    ("single frame p50, S3 / FS", S3, "single frame p50", FS, "single frame p50", "≤ 1.5"),
    ("server CPU per study retrieve, cloudfilm FS / Orthanc", FS, "server CPU per study retrieve", ORTHANC_COLUMN,
     "server CPU per study retrieve", "(lower is better)"),
]


def ratios(columns: dict[str, Figures]) -> str:
    """Each ratio per round (both figures from the same round, under the same load), then the median."""
    lines = ["| ratio (median of per-round ratios) | value | rounds | goal |", "|---|---|---|---|"]
    for label, num_col, num, den_col, den, goal in RATIOS:
        if num_col not in columns or den_col not in columns:
            continue
        pairs = list(zip(columns[num_col].values.get(num, []), columns[den_col].values.get(den, []), strict=False))
        per_round = [a / b for a, b in pairs if b]
        if per_round:
            shown = ", ".join(f"{r:.2f}" for r in per_round)
            lines.append(f"| {label} | **{statistics.median(per_round):.2f}** | {shown} | {goal} |")
    return "\n".join(lines)


def report(columns: dict[str, Figures]) -> str:
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " | goal |", "|---" * (len(names) + 2) + "|"]
    for metric, unit, goal in ROWS:
        cells = []
        for name in names:
            value = columns[name].get(metric)
            cells.append("n/a" if value is None else f"{value:,.1f} {unit}")
        lines.append(f"| {metric} | " + " | ".join(cells) + f" | {goal} |")
    return "\n".join(lines)


def concurrent_readers(urls: list[str], accept: str, readers: int, per_reader: int, workdir: Path) -> float:
    """Seconds for ``readers`` curl processes at once to GET ``per_reader`` of ``urls`` each, in turn,
    over one kept-alive connection each (curl, so that the clients are not what is measured)."""
    procs = []
    started = time.perf_counter()
    for r in range(readers):
        config = workdir / f"reader-{r}.curl"
        config.write_text("".join(f'url = "{urls[(r + i) % len(urls)]}"\noutput = "/dev/null"\n'
                                  for i in range(per_reader)))
        procs.append(subprocess.Popen(["curl", "-sf", "-H", f"Accept: {accept}", "-K", str(config)]))
    codes = [proc.wait() for proc in procs]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"a reader failed: curl exit codes {codes}")
    return elapsed


def compare_processes(processes: int, runs: int, readers: int, per_reader: int, studies: int) -> None:
    """WADO-RS instance retrieves and QIDO-RS study searches by ``readers`` concurrent clients against
    ``serve`` with 1 process and with ``processes``, both on PostgreSQL + filesystem and running side by
    side, round by round in an order that turns each round."""
    from benchmarks.serve_processes import serving

    workdir = Path(tempfile.mkdtemp(prefix="cloudfilm-dicomweb-procs-"))
    ct = make_ct_study(PATIENTS[0], n_slices=20, rows=512, cols=512, seed=7)
    figures: dict[tuple[str, str], list[float]] = {}
    try:
        with contextlib.ExitStack() as stack:
            servers = [stack.enter_context(serving(n, workdir / f"x{n}")) for n in (1, processes)]
            for served in servers:
                settings = Settings(data_dir=served.data_dir, database_url=served.database_url)
                with Archive.open(settings, migrate=False, create=False) as archive:
                    bulk_load(archive.engine, studies=studies, instances_per_study=4)
                    for ds in ct:
                        assert archive.ingest.store_bytes(to_bytes(ds)).ok
            wado = [f"studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
                    for ds in ct]
            qido = [f"studies?PatientName={prefix}*&limit=25&includefield=all" for prefix in NAME_PREFIXES]
            total = readers * per_reader
            for run in range(runs):
                order = servers[run % 2:] + servers[:run % 2]
                for served in order:
                    base = f"{served.http_url}/dicomweb/"
                    for kind, paths, accept in (("WADO-RS instance", wado, STUDY_ACCEPT),
                                                ("QIDO-RS studies", qido, "application/dicom+json")):
                        took = concurrent_readers([base + p for p in paths], accept, readers, per_reader, workdir)
                        figures.setdefault((served.label, kind), []).append(total / took)
                        print(f"round {run + 1}: {served.label:14s} {kind:17s} {total / took:7.1f} requests/s",
                              file=sys.stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    load = os.getloadavg()
    print(f"\n{readers} concurrent readers x {per_reader} requests; {studies:,} studies in each index; median of "
          f"{runs} rounds; {os.cpu_count()} CPU cores; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    print("| server | request | requests/s |")
    print("|---|---|---:|")
    medians = {key: statistics.median(values) for key, values in figures.items()}
    for (label, kind), value in medians.items():
        print(f"| {label} | {kind} | {value:.1f} |")
    print()
    for kind in ("WADO-RS instance", "QIDO-RS studies"):
        ratio = medians[(f"cloudfilm x{processes}", kind)] / medians[("cloudfilm x1", kind)]
        print(f"{kind}: {processes} processes {ratio:.2f}x one process's requests/s (goal >= 1.6)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, metavar="N", help="instead: `cloudfilm serve` on PostgreSQL with "
                        "1 process against N, under --readers concurrent clients")
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--studies", type=int, default=5000)
    parser.add_argument("--per-study", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50, help="requests per latency figure and round")
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    if args.processes:
        compare_processes(args.processes, args.runs, args.readers, args.requests, min(args.studies, 2000))
        return
    workdir = Path(tempfile.mkdtemp(prefix="cloudfilm-dicomweb-bench-"))
    step: Callable[[str], None] = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)  # noqa: E731
    targets: list[Target] = []
    try:
        with contextlib.ExitStack() as stack:
            step("generating the real studies")
            data = real_data()
            step(f"cloudfilm (filesystem): bulk-loading {args.studies * args.per_study:,} instances, ingesting 1,100")
            fs_settings = Settings(data_dir=workdir / "fs")
            rows = ingest(fs_settings, data, (args.studies, args.per_study))
            targets.append(Target(FS, stack.enter_context(cloudfilm_server(fs_settings)), True))
            if not args.no_s3:
                s3 = stack.enter_context(run_s3_server(workdir))
                s3_settings = Settings(data_dir=workdir / "s3", storage_url="s3://bench", s3_endpoint=s3.endpoint,
                                       s3_access_key=s3.access_key, s3_secret_key=s3.secret_key)  # type: ignore[arg-type]
                step("cloudfilm (S3, SeaweedFS): ingesting 1,100")
                ingest(s3_settings, data, None)
                targets.append(Target(S3, stack.enter_context(cloudfilm_server(s3_settings)), False))
                STORE_PIDS[targets[-1].base] = weed_pid(s3.endpoint)
            if not args.no_orthanc and Path(ORTHANC).exists():
                base = stack.enter_context(orthanc_server(workdir))
                step(f"Orthanc: loading 1,100 + {len(rows):,} instances")
                load_orthanc(base, data, rows)
                targets.append(Target(ORTHANC_COLUMN, base, True))
            step(f"measuring {len(targets)} servers, {args.runs} rounds each, in turn")
            load_before = os.getloadavg()
            measure(targets, data, runs=args.runs, requests=args.requests)
            load_after = os.getloadavg()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    columns = {t.name: t.figures for t in targets}
    print()
    print(f"{args.studies:,} studies / {args.studies * args.per_study:,} instances in cloudfilm's index "
          f"({args.studies:,} studies / {2 * args.studies:,} small instances in Orthanc); medians of {args.runs} "
          f"rounds of {args.requests} requests; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"({os.cpu_count()} cores)")
    print(report(columns))
    print()
    print(ratios(columns))


if __name__ == "__main__":
    main()
