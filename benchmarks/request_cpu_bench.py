"""Server CPU time per DICOMweb request: cloudfilm beside Orthanc, read off the servers' own processes.

    .venv/bin/python benchmarks/request_cpu_bench.py [--requests 300] [--runs 5] [--no-orthanc]

Both servers get the same 20-slice 512x512 CT; then, per request kind, ``--requests`` sequential
requests over one kept-alive connection, and the server process's user + system CPU time (from
/proc, all threads) divided by their number. CPU time, not latency: what a request costs the server
stays nearly the same when other work shares the machine, so the figure can be compared across
runs and machines of one kind better than a latency. Median over ``--runs`` rounds, servers in turn
within each round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.dicomweb_bench import (  # noqa: E402
    FRAME_ACCEPT,
    SERVER_PIDS,
    cloudfilm_server,
    cpu_seconds,
    orthanc_server,
)
from pacs.archive import Archive  # noqa: E402
from pacs.settings import Settings  # noqa: E402
from tests.factories import PATIENTS, make_ct_study, to_bytes  # noqa: E402


def kinds(ct: list, base: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Request kind -> (URLs to cycle through, headers)."""
    study, series = ct[0].StudyInstanceUID, ct[0].SeriesInstanceUID
    inst = [f"{base}studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}" for ds in ct]
    return {
        "WADO-RS instance": (inst, {"Accept": 'multipart/related; type="application/dicom"'}),
        "WADO-RS frame": ([f"{u}/frames/1" for u in inst], {"Accept": FRAME_ACCEPT}),
        "series metadata": ([f"{base}studies/{study}/series/{series}/metadata"], {"Accept": "application/dicom+json"}),
        "QIDO-RS studies": ([f"{base}studies?PatientName={ct[0].PatientName.family_name[:3]}*"],
                            {"Accept": "application/dicom+json"}),
    }  # fmt: skip


def cpu_per_request(base: str, urls: list[str], headers: dict[str, str], n: int) -> float:
    """Milliseconds of server CPU per request."""
    pids = SERVER_PIDS[base]
    with httpx.Client(timeout=60) as client:
        for url in urls[:3]:  # warm caches and the connection
            client.get(url, headers=headers).raise_for_status()
        before = cpu_seconds(pids)
        for i in range(n):
            resp = client.get(urls[i % len(urls)], headers=headers)
            resp.raise_for_status()
        after = cpu_seconds(pids)
    return (after - before) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-orthanc", action="store_true")
    args = parser.parse_args()

    ct = make_ct_study(PATIENTS[0], n_slices=20, rows=512, cols=512, seed=7, lesion="random")
    with tempfile.TemporaryDirectory(prefix="reqcpu-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        settings = Settings(data_dir=work / "cloudfilm")
        with Archive.open(settings) as archive:
            for ds in ct:
                assert archive.ingest.store_bytes(to_bytes(ds)).ok
        servers = {"cloudfilm": stack.enter_context(cloudfilm_server(settings))}
        if not args.no_orthanc:
            orthanc = stack.enter_context(orthanc_server(work))
            rest = orthanc.removesuffix("dicom-web/")
            with httpx.Client(timeout=60) as client:
                for ds in ct:
                    client.post(f"{rest}instances", content=to_bytes(ds),
                                headers={"Content-Type": "application/dicom"}).raise_for_status()
            servers["Orthanc"] = orthanc
        figures: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):
            for name, base in servers.items():
                for kind, (urls, headers) in kinds(ct, base).items():
                    figures.setdefault((name, kind), []).append(cpu_per_request(base, urls, headers, args.requests))
        names = list(servers)
        print(f"\nServer CPU per request, ms (median of {args.runs} rounds x {args.requests} requests)\n")
        print("| request | " + " | ".join(names) + (" | cloudfilm / Orthanc |" if len(names) > 1 else " |"))
        print("|---" * (len(names) + (2 if len(names) > 1 else 1)) + "|")
        for kind in kinds(ct, ""):
            values = [statistics.median(figures[(n, kind)]) for n in names]
            ratio = f" | {values[0] / values[1]:.1f}x" if len(values) > 1 and values[1] else ""
            print(f"| {kind} | " + " | ".join(f"{v:.2f}" for v in values) + ratio + " |")


if __name__ == "__main__":
    main()
