"""No 40 ms stall per message with peers that leave Nagle's algorithm on (pacs.dimse.overrides.transport).

DCMTK writes a DIMSE message in several pieces and, by default, leaves Nagle's algorithm on: each
later piece waits until the earlier one is acknowledged, and Linux delays ACKs up to 40 ms. Before
the listener acknowledged at once, every such message took >= 40 ms, whatever its size; the bound
below is that delay per message, a wide margin above what a message takes now (~5 ms).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pydicom.dataset import Dataset

from tests.factories import PATIENTS, make_ct_study, write_files
from tests.pacs.dimse.support import AET, DEST_AET, QR_AET, Node, run_tool, storescp

N = 60
STALL_S = 0.040  # Linux's minimum delayed-ACK time


def _study() -> list[Dataset]:
    return make_ct_study(PATIENTS[2], n_slices=N, rows=64, cols=64, seed=77)


def _nagle_env() -> dict[str, str]:
    """DCMTK's default: Nagle's algorithm on (TCP_NODELAY unset)."""
    return {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}


def test_storescu_messages_are_not_stalled_by_delayed_acks(node: Node, tmp_path: Path) -> None:
    files = write_files(_study(), tmp_path / "study")
    started = time.perf_counter()
    out = subprocess.run(["storescu", "-aec", AET, "127.0.0.1", str(node.port), *map(str, files)],
                         capture_output=True, text=True, env=_nagle_env(), timeout=60)
    elapsed = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    assert elapsed < N * STALL_S, f"{N} C-STOREs took {elapsed:.2f} s: stalled by delayed ACKs"


def test_cmove_sub_operations_are_not_stalled_by_delayed_acks(node: Node, tmp_path: Path) -> None:
    study = _study()
    node.store_datasets(study)
    port = node.settings.dicom_modalities["dest"].port
    with storescp(port, tmp_path / "dest"):
        started = time.perf_counter()
        out = run_tool("movescu", "-S", "-aet", QR_AET, "-aec", AET, "-aem", DEST_AET, "127.0.0.1", node.port,
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].StudyInstanceUID}")
        elapsed = time.perf_counter() - started
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "dest").iterdir())) == N
    assert elapsed < N * STALL_S, f"a C-MOVE of {N} instances took {elapsed:.2f} s: stalled by delayed ACKs"
