"""Durability: a process killed with SIGKILL never leaves an index row without its object."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pacs.archive import Archive
from pacs.fsck import fsck
from pacs.settings import Settings
from tests.cli import CLOUDFILM, run_cli
from tests.factories import make_ct_study, to_bytes, write_files
from tests.pacs.test_cli import _env

_KILL_BEFORE_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import pacs.ingest
    from pacs.archive import Archive
    from pacs.settings import Settings

    def die_before_commit(engine, records, before_commit=None):
        before_commit()  # waits until the objects are durable under their keys
        os.kill(os.getpid(), signal.SIGKILL)  # the index transaction is not committed

    pacs.ingest.commit_batch = die_before_commit
    archive = Archive.open(Settings())
    archive.ingest.store_file(Path(sys.argv[1]))
    print("not reached")
    """
)


def test_sigkill_between_object_write_and_index_commit(settings: Settings, tmp_path: Path) -> None:
    dicom = tmp_path / "one.dcm"
    dicom.write_bytes(to_bytes(make_ct_study(n_slices=1, seed=50)[0]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")} | _env(settings)
    proc = subprocess.run([sys.executable, "-c", _KILL_BEFORE_COMMIT, str(dicom)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout

    with Archive.open(settings) as archive:
        report = fsck(archive)
        assert report.checked == 0 and report.missing == []
        assert len(report.orphans) == 1  # the object that was written but never indexed

    kept = run_cli("fsck", "--repair", env=_env(settings))  # default grace: a fresh orphan is left alone
    assert "0 orphan objects removed" in kept.stdout
    repaired = run_cli("fsck", "--repair", "--grace", "0", env=_env(settings))
    assert "1 orphan objects removed" in repaired.stdout, repaired.stdout + repaired.stderr
    clean = run_cli("fsck", env=_env(settings))
    assert clean.returncode == 0 and "0 instances checked, 0 problems" in clean.stdout


def test_sigkill_at_random_moments_during_import(local_archive: Archive, tmp_path: Path) -> None:
    settings = local_archive.settings
    local_archive.close()
    files = write_files(make_ct_study(n_slices=60, rows=256, cols=256, seed=51), tmp_path / "in")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")} | _env(settings)
    for delay in (0.8, 1.1, 1.5):
        proc = subprocess.Popen([CLOUDFILM, "import", str(tmp_path / "in")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with Archive.open(settings) as archive:
            report = fsck(archive)
            assert report.missing == [] and report.wrong_size == []  # never a row without its object
    final = run_cli("import", str(tmp_path / "in"), env=_env(settings))
    assert final.returncode == 0, final.stderr
    with Archive.open(settings) as archive:
        report = fsck(archive, repair=True, grace_s=0)
        assert report.checked == len(files) and report.missing == []
        assert fsck(archive).problems == 0
