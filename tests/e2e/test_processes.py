"""``cloudfilm serve --processes 2`` on PostgreSQL and S3: both processes take HTTP requests and DICOM
associations on the one pair of ports, a killed process is replaced, and SIGTERM lets an upload and
an association in progress finish before the node stops."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import func, select

from pacs.archive import Archive
from pacs.index.models import Instance
from pacs.settings import Settings
from tests.cli import CLOUDFILM, cli_env, settings_env
from tests.conftest import archive_settings
from tests.factories import PATIENTS, make_ct_study
from tests.net import free_port
from tests.viewer_api.conftest import STOW_TYPE, stow_body

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.s3]

_STARTED = re.compile(r"process (\d+) started \(pid (\d+)\)")


@dataclass
class Node:
    proc: subprocess.Popen[bytes]
    url: str
    dicom_port: int
    log: Path
    settings: Settings

    def pids(self) -> dict[int, int]:
        """The current pid of each slot, as the supervisor logged their starts."""
        return {int(slot): int(pid) for slot, pid in _STARTED.findall(self.log.read_text(errors="replace"))}


@contextmanager
def suspended(pid: int) -> Iterator[None]:
    """``pid`` stopped (SIGSTOP): it accepts nothing until resumed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("processes")
    for settings in archive_settings("postgres-s3", tmp, request):
        http, dicom = free_port(), free_port()
        env = cli_env(**settings_env(settings), CLOUDFILM_HTTP_PORT=str(http), CLOUDFILM_DICOM_PORT=str(dicom),
                      CLOUDFILM_DICOM_HOST="127.0.0.1", CLOUDFILM_AUTH_DISABLED="true",
                      CLOUDFILM_WORKER_CONCURRENCY="0", CLOUDFILM_SHUTDOWN_GRACE="15", CLOUDFILM_LOG_LEVEL="INFO")
        log = tmp / "serve.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([CLOUDFILM, "serve", "--processes", "2"], env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "is ready" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield Node(proc, f"http://127.0.0.1:{http}", dicom, log, settings)
        finally:
            if proc.poll() is None:
                proc.kill()  # takes its processes with it (they watch its pipe)
                proc.wait()


def _c_store(port: int, datasets: list[Dataset], pause: float = 0.0, acked: list[str] | None = None) -> list[str]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    acked = [] if acked is None else acked
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDFILM")
    assert assoc.is_established
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status and status.Status == 0, status
            acked.append(str(ds.SOPInstanceUID))
            time.sleep(pause)
    finally:
        if assoc.is_established:
            assoc.release()
    return acked


def _stored(settings: Settings) -> int:
    with Archive.open(settings, create=False) as archive, archive.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Instance)).scalar_one())


def test_both_processes_serve_both_ports(node: Node) -> None:
    pids = node.pids()
    assert sorted(pids) == [0, 1] and pids[0] != pids[1]
    for n, busy in enumerate([pids[0], pids[1]]):
        with suspended(busy):  # only the other process can accept now
            assert httpx.get(f"{node.url}/healthz", timeout=20).status_code == 200
            study = make_ct_study(PATIENTS[n], n_slices=3, rows=16, cols=16, seed=8100 + n)
            assert len(_c_store(node.dicom_port, study)) == 3
            metrics = httpx.get(f"{node.url}/metrics", timeout=20).text
            assert f"cloudfilm_instances_stored_total {3.0 * (n + 1)}" in metrics  # summed over both processes
            assert 'processes="2"' in metrics and "cloudfilm_node_info{" in metrics
    assert _stored(node.settings) == 6


def _established(port: int, pids: list[int]) -> dict[int, int]:
    """How many established connections to local ``port`` each of ``pids`` holds (from /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if (target := os.readlink(fd)).startswith("socket:["):
                    inodes[target[8:-1]] = pid
    held = dict.fromkeys(pids, 0)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            if local_port == port and state == "01" and inode in inodes:
                held[inodes[inode]] += 1
    return held


def _at_once(n: int, connect: Callable[[], object]) -> list[object]:
    """``n`` connections opened by as many threads at the same instant."""
    barrier = threading.Barrier(n)
    opened: list[object] = []

    def one() -> None:
        barrier.wait()
        opened.append(connect())

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return opened


def test_new_connections_go_to_the_less_busy_process(node: Node) -> None:
    """Keep-alive HTTP connections and DICOM associations opened in a burst go to the process that holds
    fewer, not to whichever was idle when the burst came (every process is woken for each connection;
    one holding more than its sibling lets the sibling take it): with half of them already held by one
    process (its sibling was stopped), the next burst goes to the sibling."""
    pids = list(node.pids().values())
    port = int(node.url.rsplit(":", 1)[1])

    def keep_alive() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: archive\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # served, and kept open
        return sock

    def association() -> Any:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.dicom_port, ae_title="CLOUDFILM")
        assert assoc.is_established
        return assoc

    for listening, n, connect, end in ((port, 16, keep_alive, lambda c: c.close()),
                                      (node.dicom_port, 8, association, lambda a: a.release())):
        with suspended(pids[1]):
            opened = _at_once(n // 2, connect)
        try:
            assert _established(listening, pids) == {pids[0]: n // 2, pids[1]: 0}
            opened += _at_once(n // 2, connect)
            held = _established(listening, pids)
            assert sum(held.values()) == n and held[pids[1]] >= n // 2 - 1, (listening, held)
        finally:
            for connection in opened:
                end(connection)


def test_a_killed_process_is_replaced(node: Node) -> None:
    pids = node.pids()
    os.kill(pids[1], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (new := node.pids()[1]) == pids[1]:
        assert time.monotonic() < deadline, node.log.read_text()
        time.sleep(0.2)
    assert f"process 1 (pid {pids[1]}) was killed by SIGKILL; restarting it" in node.log.read_text()
    with suspended(pids[0]):  # the replacement takes connections on the same ports
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"{node.url}/healthz", timeout=5).status_code == 200
                break
            except httpx.TimeoutException:  # still starting: the connection waits in the shared backlog
                assert time.monotonic() < deadline and node.proc.poll() is None, node.log.read_text()
        study = make_ct_study(PATIENTS[2], n_slices=2, rows=16, cols=16, seed=8200)
        assert len(_c_store(node.dicom_port, study)) == 2
    assert new != pids[1] and node.proc.poll() is None


def test_sigterm_lets_uploads_and_associations_in_progress_finish(node: Node) -> None:
    before = _stored(node.settings)
    study = make_ct_study(PATIENTS[3], n_slices=20, rows=16, cols=16, seed=8300)
    acked: list[str] = []
    sender = threading.Thread(target=_c_store, args=(node.dicom_port, study, 0.15, acked))
    sender.start()
    stow_study = make_ct_study(PATIENTS[4], n_slices=4, rows=16, cols=16, seed=8400)
    body = stow_body(stow_study)
    terminated = threading.Event()

    def slowly() -> Iterator[bytes]:  # the upload is under way when SIGTERM comes, and ends after it
        half = len(body) // 2
        yield body[:half]
        node.proc.send_signal(signal.SIGTERM)
        terminated.set()
        time.sleep(2)
        yield body[half:]

    while len(acked) < 3:
        assert sender.is_alive()
        time.sleep(0.05)
    stow = httpx.post(f"{node.url}/dicomweb/studies", content=slowly(), headers={"Content-Type": STOW_TYPE},
                      timeout=60)
    assert terminated.is_set() and stow.status_code == 200, stow.text
    sender.join(timeout=60)
    assert len(acked) == 20, node.log.read_text()[-4000:]  # the association went on to its release
    assert node.proc.wait(timeout=40) == 0
    log = node.log.read_text()
    assert "aborting" not in log and "Traceback" not in log, log
    assert _stored(node.settings) == before + 20 + 4
    with pytest.raises(httpx.ConnectError):  # the ports are closed with the node
        httpx.get(f"{node.url}/healthz", timeout=5)
