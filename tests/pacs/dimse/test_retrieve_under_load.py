"""C-MOVE and C-GET of a 200-instance study, round after round, on a busy machine: no sub-operation lost.

While two processes burn CPU, a ``storescu`` keeps storing other studies and a ``cloudfilm worker``
runs the lesion detector on them, each round moves the study to DCMTK's ``storescp`` and gets it
with ``getscu`` at the same time. Every round must deliver all 200 instances, each byte for byte
as stored. pynetdicom's requestor reactor used to take a C-STORE-RSP meant for ``send_c_store``
off the DIMSE queue now and then (the sub-association then waited for the DIMSE timeout and every
later sub-operation failed); on the 2-core development machine that lost sub-operations in most
rounds (see :mod:`pacs.dimse.overrides.reactor`). Small images: the race is per message, not per byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from pacs.jobs import JobQueue, JobStatus
from tests.factories import PATIENTS, make_ct_study, write_files
from tests.pacs.dimse.support import (
    AET,
    DEST_AET,
    QR_AET,
    Node,
    dataset_bytes,
    run_tool,
    stored_bytes,
    storescp,
)

ROUNDS = 30
INSTANCES = 200
CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@contextmanager
def _processes(commands: list[list[str]], env: dict[str, str] | None = None) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env) for cmd in commands]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def _storing(node: Node, studies: list[list[Path]]) -> Iterator[list[int]]:
    """``storescu`` sending the studies over and over on another thread; yields the exit codes so far."""
    stop = threading.Event()
    codes: list[int] = []

    def loop() -> None:
        n = 0
        while not stop.is_set():
            files = studies[n % len(studies)]
            n += 1
            out = run_tool("storescu", "-aet", "LOADGEN", "-aec", AET, "127.0.0.1", node.port, *files, timeout=120)
            codes.append(out.returncode)

    thread = threading.Thread(target=loop, name="storescu-load", daemon=True)
    thread.start()
    try:
        yield codes
    finally:
        stop.set()
        thread.join(timeout=150)


def _received(directory: Path) -> dict[str, bytes]:
    """The files a DCMTK receiver wrote, as dataset bytes by SOP Instance UID; the files are removed."""
    out = {}
    for path in directory.iterdir():
        out[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = dataset_bytes(path.read_bytes())
        path.unlink()
    return out


class Stored:
    """The archive's dataset bytes of each instance, read once."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._bytes: dict[str, bytes] = {}

    def __getitem__(self, sop_uid: str) -> bytes:
        if sop_uid not in self._bytes:
            self._bytes[sop_uid] = dataset_bytes(stored_bytes(self._node, sop_uid))
        return self._bytes[sop_uid]


def _lost(study: set[str], stored: Stored, received: dict[str, bytes]) -> str:
    """What did not arrive intact: '' when every instance of ``study`` arrived and everything that arrived
    (the study, and the AI results added to it meanwhile) is byte for byte what the archive stores."""
    missing = study - set(received)
    altered = {uid for uid, data in received.items() if stored[uid] != data}
    return f"{len(missing)} missing, {len(altered)} altered" if missing or altered else ""


def test_no_sub_operation_is_lost_under_load(make_node: Callable[..., Node], tmp_path: Path) -> None:
    node = make_node(dicom_dimse_timeout=10.0)
    study: list[Dataset] = make_ct_study(PATIENTS[0], n_slices=INSTANCES, rows=16, cols=16, seed=1201)
    node.store_datasets(study)
    instances, stored = {str(ds.SOPInstanceUID) for ds in study}, Stored(node)
    study_uid = str(study[0].StudyInstanceUID)
    others = [write_files(make_ct_study(PATIENTS[(i % 3) + 1], n_slices=16, rows=48, cols=48, seed=1300 + i),
                          tmp_path / f"other{i}") for i in range(6)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    env.update({"CLOUDFILM_DATA_DIR": str(node.settings.data_dir), "CLOUDFILM_STABLE_AGE": "1",
                "CLOUDFILM_JOB_POLL_INTERVAL": "0.2", "CLOUDFILM_LOG_LEVEL": "WARNING"})
    burn = ["nice", "-n", "10", sys.executable, "-c", "while True: pass"]  # preempt, yet leave the test a share
    moved_dir, got_dir = tmp_path / "moved", tmp_path / "got"
    got_dir.mkdir()
    losses: list[str] = []
    started = time.monotonic()
    with (_processes([burn, burn]), _processes([[CLOUDFILM, "worker"]], env=env),
          storescp(node.settings.dicom_modalities["dest"].port, moved_dir), _storing(node, others) as store_codes,
          ThreadPoolExecutor(max_workers=1) as retrievers):
        for n in range(ROUNDS):
            get = retrievers.submit(run_tool, "getscu", "-S", "+B", "-aet", QR_AET, "-aec", AET, "-od", got_dir,
                                    "127.0.0.1", node.port, "-k", "QueryRetrieveLevel=STUDY",
                                    "-k", f"StudyInstanceUID={study_uid}", timeout=300)
            move = run_tool("movescu", "-S", "-aet", QR_AET, "-aec", AET, "-aem", DEST_AET, "127.0.0.1", node.port,
                            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", timeout=300)
            got_code = get.result().returncode
            moved, got = _lost(instances, stored, _received(moved_dir)), _lost(instances, stored, _received(got_dir))
            if moved or got or move.returncode or got_code:
                losses.append(f"round {n}: C-MOVE {moved or 'complete'} (exit {move.returncode}), "
                              f"C-GET {got or 'complete'} (exit {got_code})")
        jobs = JobQueue(node.archive.engine).counts()
    elapsed = time.monotonic() - started
    assert not losses, f"{len(losses)} of {ROUNDS} rounds lost sub-operations in {elapsed:.0f} s:\n" + "\n".join(losses)
    assert store_codes and set(store_codes) == {0}, store_codes  # the concurrent C-STOREs all succeeded
    assert jobs[JobStatus.SUCCEEDED] + jobs[JobStatus.RUNNING] >= 1, jobs  # the AI jobs ran meanwhile
