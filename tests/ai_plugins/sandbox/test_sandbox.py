"""The sandbox against hostile packages: each one is stopped with a sentence saying why, and the
archive next to it (its data directory, secret key, database server, other cases) is unharmed.

Small limits keep these fast: 512 MiB of address space, 3 CPU seconds, 6 s of wall time, 8 MiB
of scratch space, 16 processes.
"""

from __future__ import annotations

import os
import socket
import textwrap
from pathlib import Path

import pytest

from ai_plugins.sandbox import Limits, PackageEnv, run_sandboxed
from ai_plugins.sandbox.run import cgroups_of
from tests.factories import make_study_set, to_bytes

LIMITS = Limits(memory_mb=768, cpu_s=3, wall_s=8, scratch_mb=8, max_processes=16, max_answer_mb=1)

PLUGIN = '''
from ai_plugins.sdk import Classification, Findings, InputFilter, Plugin, codes


class Probe(Plugin):
    name = "probe"
    version = "1.0"
    vendor = "tests"
    input_filter = InputFilter(modalities=("CT",))

    def run(self, study):
{body}
        n = len(study.series[0].datasets)
        return Findings(classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=n / 100)])
'''


def package(tmp: Path, body: str) -> PackageEnv:
    site = tmp / "env"
    (site / "probe").mkdir(parents=True)
    (site / "probe" / "__init__.py").write_text(PLUGIN.format(body=textwrap.indent(textwrap.dedent(body), " " * 8)))
    return PackageEnv(site, "probe:Probe")


@pytest.fixture
def case_dir(tmp_path: Path) -> Path:
    case = make_study_set(1, n_slices=4, rows=32, cols=32, seed=5, modalities=["CT"])[0]
    root = tmp_path / "case"
    root.mkdir()
    for i, ds in enumerate(case.datasets):
        (root / f"{i:05d}.dcm").write_bytes(to_bytes(ds))
    return root


@pytest.fixture
def archive_files(tmp_path: Path) -> dict[str, Path]:
    """What a package must never read: an archive's data directory with its index and secret key."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "index.sqlite3").write_bytes(b"SQLite format 3\x00 patient records")
    (data / "secret.key").write_text("the-archive-secret-key-0123456789")
    return {"data": data, "index": data / "index.sqlite3", "key": data / "secret.key"}


def _unharmed(archive_files: dict[str, Path]) -> None:
    assert archive_files["key"].read_text() == "the-archive-secret-key-0123456789"
    assert archive_files["index"].read_bytes().startswith(b"SQLite format 3")
    # every sandbox's processes killed and its cgroup removed (this process's: the other pytest worker
    # may be running sandboxes of its own meanwhile)
    assert cgroups_of(os.getpid()) == []


def test_a_well_behaved_package_answers_findings(tmp_path: Path, case_dir: Path) -> None:
    outcome = run_sandboxed(package(tmp_path, 'print("a line for the log")'), case_dir, LIMITS)
    assert outcome.ok, (outcome.error, outcome.log_tail)
    assert '"probability": 0.04' in outcome.findings_json  # it read the four instances of its case
    assert "a line for the log" in outcome.log_tail and "a line" not in outcome.findings_json


def test_no_network_not_even_the_archive_database(tmp_path: Path, case_dir: Path,
                                                   archive_files: dict[str, Path]) -> None:  # fmt: skip
    with socket.create_connection(("127.0.0.1", 5432), timeout=5):
        pass  # the database is there, next to the sandbox
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        for target in (("127.0.0.1", 5432), ("127.0.0.1", port), ("1.1.1.1", 443)):
            body = f"import socket\nsocket.create_connection({target!r}, timeout=3).sendall(b'x')\n"
            outcome = run_sandboxed(package(tmp_path / str(target[1]), body), case_dir, LIMITS)
            assert not outcome.ok and outcome.error.startswith("the package failed: "), outcome
            assert "Connection refused" in outcome.error or "unreachable" in outcome.error, outcome.error
    finally:
        listener.close()
    _unharmed(archive_files)


def test_no_secrets_no_archive_files_no_other_case(tmp_path: Path, case_dir: Path, archive_files: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    other = tmp_path / "other-case"
    other.mkdir()
    (other / "0.dcm").write_bytes(b"another patient")
    assert Path("/etc/shadow").exists()
    for path in ("/etc/shadow", archive_files["key"], archive_files["index"], other / "0.dcm"):
        body = f"print(open({str(path)!r}, 'rb').read(64))\n"
        outcome = run_sandboxed(package(tmp_path / Path(path).name, body), case_dir, LIMITS)
        assert not outcome.ok and ("FileNotFoundError" in outcome.error or "PermissionError" in outcome.error), \
            (path, outcome.error)  # fmt: skip
        assert not {"archive-secret", "patient"} & set(outcome.log_tail.replace("-", " ").split()) and \
            "the-archive-secret-key" not in outcome.log_tail and "patient records" not in outcome.log_tail  # fmt: skip
    monkeypatch.setenv("CLOUDFILM_SECRET_KEY", "the-archive-secret-key-in-the-environment")
    environ = "print('ENV', open('/proc/1/environ').read(), open('/proc/self/environ').read())\n"
    outcome = run_sandboxed(package(tmp_path / "env", environ), case_dir, LIMITS)
    assert outcome.ok and "ENV" in outcome.log_tail and "the-archive-secret" not in outcome.log_tail
    assert "CLOUDFILM" not in outcome.log_tail
    listing = "import os\nprint('LISTING', sorted(os.listdir('/')))\nraise SystemExit(3)\n"
    outcome = run_sandboxed(package(tmp_path / "ls", listing), case_dir, LIMITS)
    line = next(s for s in outcome.log_tail.splitlines() if s.startswith("LISTING"))
    top = set(line.removeprefix("LISTING ").strip("[]").replace("'", "").split(", "))
    assert top <= {"bin", "case", "deps", "dev", "lib", "lib32", "lib64", "opt", "pkg", "proc", "root", "sbin",
                   "scratch", "sdk", "tmp", "usr"}, top  # "root" holds only the Python install when it lives there
    assert "etc" not in top and "work" not in top and str(tmp_path).split("/")[1] not in top - {"tmp"}
    for writable in ("/pkg/probe/x.py", "/case/x.dcm", "/x"):  # read-only everywhere but /scratch
        writer = package(tmp_path / writable.replace("/", "-"), f"open({writable!r}, 'w').write('x')\n")
        outcome = run_sandboxed(writer, case_dir, LIMITS)
        assert "Read-only file system" in outcome.error, (writable, outcome.error)
    _unharmed(archive_files)


def test_a_fork_bomb_is_stopped(tmp_path: Path, case_dir: Path, archive_files: dict[str, Path]) -> None:
    body = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    outcome = run_sandboxed(package(tmp_path, body), case_dir, LIMITS)
    assert not outcome.ok and outcome.error, outcome
    assert outcome.wall_s < LIMITS.wall_s + 5
    assert os.system("true") == 0  # the machine can still start processes
    _unharmed(archive_files)


def test_64_gib_is_not_allocated(tmp_path: Path, case_dir: Path, archive_files: dict[str, Path]) -> None:
    outcome = run_sandboxed(package(tmp_path, "hog = bytearray(64 << 30)\n"), case_dir, LIMITS)
    assert outcome.error.startswith("the package ran out of memory (limit 768 MiB)"), outcome
    _unharmed(archive_files)


def test_an_endless_loop_is_stopped_at_its_cpu_limit(tmp_path: Path, case_dir: Path,
                                                      archive_files: dict[str, Path]) -> None:  # fmt: skip
    outcome = run_sandboxed(package(tmp_path, "while True:\n    pass\n"), case_dir, LIMITS)
    assert outcome.error == "the package was killed by SIGXCPU (CPU time limit 3 s)", outcome
    _unharmed(archive_files)


def test_a_sleeper_is_stopped_at_its_wall_time(tmp_path: Path, case_dir: Path) -> None:
    outcome = run_sandboxed(package(tmp_path, "import time\ntime.sleep(3600)\n"), case_dir,
                            LIMITS.model_copy(update={"wall_s": 2.0}))  # fmt: skip
    assert outcome.error == "the package ran past its wall-time limit of 2 s and was stopped"
    assert 2.0 <= outcome.wall_s < 6


def test_writing_10_gib_is_stopped(tmp_path: Path, case_dir: Path, archive_files: dict[str, Path]) -> None:
    body = "block = b'x' * (1 << 20)\nwith open('/scratch/big', 'wb') as fh:\n    for _ in range(10 * 1024):\n" \
           "        fh.write(block)\n"  # fmt: skip
    outcome = run_sandboxed(package(tmp_path, body), case_dir, LIMITS)
    assert not outcome.ok and any(
        s in outcome.error for s in ("No space left on device", "File too large", "SIGXFSZ")), outcome
    flood = "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n"  # the plugin's output goes to the log
    outcome = run_sandboxed(package(tmp_path / "flood", flood), case_dir, LIMITS.model_copy(update={"wall_s": 2.0}))
    assert not outcome.ok and len(outcome.log_tail) <= 64 * 1024
    # Nothing of either reached the host's disk: /scratch is a tmpfs and the log is a bounded tail.
    # (Measured as what the run left on disk, not as the disk's free space: the other test worker
    # writes to the same disk meanwhile.)
    left = sum(p.stat().st_size for root in (tmp_path, case_dir) for p in root.rglob("*") if p.is_file())
    assert left < 64 << 20, left
    _unharmed(archive_files)


def test_no_privileges_inside(tmp_path: Path, case_dir: Path) -> None:
    """Root outside, nobody inside: no capabilities, so the read-only mounts stay read-only, and no
    nested user namespace to win them back in."""
    body = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "print('REMOUNT', libc.mount(b'none', b'/pkg', None, 32 | 4096, None), ctypes.get_errno())\n"
            "print('UNSHARE', libc.unshare(0x10000000), ctypes.get_errno())\n"
            "print([line.strip() for line in open('/proc/self/status') if line.startswith('CapEff')])\n"
            "open('/pkg/probe/x.py', 'w')\n")  # fmt: skip
    outcome = run_sandboxed(package(tmp_path, body), case_dir, LIMITS)
    assert "Read-only file system" in outcome.error, outcome
    assert "REMOUNT -1 1" in outcome.log_tail  # EPERM
    assert "UNSHARE -1" in outcome.log_tail and "CapEff:\\t0000000000000000" in outcome.log_tail
