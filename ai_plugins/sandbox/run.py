"""Running one package on one case inside bubblewrap: the one way vendor code executes.

The sandbox (``bwrap --unshare-all``: no network, its own PID, IPC, UTS and user namespaces) sees
read-only: the system libraries (``/usr``), the Python install, the third-party libraries the SDK
needs, the SDK itself, the package's own environment (``/pkg``) and the one case written for it
(``/case``); and one writable tmpfs, ``/scratch`` (also ``/tmp`` and ``HOME``), of a fixed size.
Nothing else exists in it: no ``/etc``, no archive data directory, database, secret key, object
store or other case. Limits: address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), file size
(RLIMIT_FSIZE), no core dumps, and the number of processes (a ``pids`` cgroup where the archive
runs as root, whom RLIMIT_NPROC does not bind; RLIMIT_NPROC otherwise). The whole process tree is
killed at the wall-time limit, when the worker asks, or when the answer grows past its cap: killing
bwrap kills the namespace's first process (``--die-with-parent``), and with it the namespace.

The package answers one JSON line on standard output (:mod:`ai_plugins.sandbox.entry`); the archive
validates the findings against the SDK's schema and writes SR/SEG itself.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ai_plugins.sandbox.limits import Limits

log = logging.getLogger(__name__)

ENTRY = Path(__file__).with_name("entry.py")
SDK = Path(__file__).resolve().parents[1] / "sdk"
PIDS_V1 = Path("/sys/fs/cgroup/pids")
STDERR_TAIL = 64 * 1024
STOPPED = "the worker stopped the package"
#: bwrap's own environment: its monitor process is PID 1 in the sandbox, readable in /proc/1/environ.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class SandboxUnavailable(Exception):
    """This machine cannot run packages safely (no bwrap, or no way to cap processes)."""


@dataclass(frozen=True, slots=True)
class PackageEnv:
    """An admitted package's environment (its code, weights and dependencies) and its plugin class."""

    root: Path
    plugin_ref: str  # module:qualname inside the environment


@dataclass(frozen=True, slots=True)
class SandboxOutcome:
    """The findings JSON, or one sentence saying why there is none; the run's log tail and wall time."""

    findings_json: str = ""
    error: str = ""
    log_tail: str = ""
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


def _deps_dirs() -> list[str]:
    """Where the SDK's own dependencies (pydantic, numpy, pydicom) live in this install."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def _python() -> Path:
    return Path(os.path.realpath(sys.executable))


def _system_binds() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("lib", "lib64", "lib32", "bin", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    prefix = Path(sys.base_prefix).resolve()
    if not prefix.is_relative_to("/usr"):
        args += ["--ro-bind", str(prefix), str(prefix)]
    return args


NO_BWRAP = "bubblewrap (bwrap) is not installed; algorithm packages cannot run here"


def unavailable() -> str | None:
    """Why this machine cannot run packages (no bwrap, no prlimit), or ``None`` when it can; a cgroup
    that cannot be made shows only at the first run."""
    if shutil.which("bwrap") is None:
        return NO_BWRAP
    if shutil.which("prlimit") is None:
        return "prlimit (util-linux) is not installed; a package's resources cannot be limited here"
    return None


def bwrap_command(env: PackageEnv, case_dir: Path, limits: Limits) -> list[str]:
    """The bwrap command line of one run (without the resource limits, which wrap it)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(NO_BWRAP)
    deps = _deps_dirs()
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", *_system_binds(),
            "--ro-bind", str(SDK), "/sdk/ai_plugins/sdk", "--ro-bind", str(ENTRY), "/opt/cloudfilm/entry.py",
            "--ro-bind", str(env.root), "/pkg", "--ro-bind", str(case_dir), "/case"]  # fmt: skip
    for n, path in enumerate(deps):
        args += ["--ro-bind", path, f"/deps/{n}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.scratch_mb * 1024 * 1024), "--tmpfs", "/scratch",
             "--symlink", "/scratch", "/tmp", "--remount-ro", "/", "--clearenv", "--setenv", "HOME", "/scratch",
             "--setenv", "TMPDIR", "/scratch", "--setenv", "PYTHONDONTWRITEBYTECODE", "1",
             "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "OPENBLAS_NUM_THREADS", "1", "--chdir", "/scratch",
             str(_python()), "-I", "/opt/cloudfilm/entry.py", env.plugin_ref, "/case", "/pkg",
             "/sdk", *(f"/deps/{n}" for n in range(len(deps)))]  # fmt: skip
    return args


def _rlimits(limits: Limits) -> list[str]:
    memory = limits.memory_mb * 1024 * 1024
    return ["prlimit", f"--as={memory}:{memory}", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}",
            f"--fsize={limits.scratch_mb * 1024 * 1024}", "--core=0",
            f"--nproc={limits.max_processes}:{limits.max_processes}", "--"]  # fmt: skip


#: A sandbox's pids cgroup is named after the process that made it, so that what one archive process (or
#: test process) left behind is told apart from the sandboxes another one on the machine runs meanwhile.
_CGROUP_PREFIX = "cloudfilm-sandbox-"


def cgroups_of(pid: int) -> list[Path]:
    """The sandbox pids cgroups process ``pid`` made that still exist: none once its sandboxes ended."""
    return sorted(PIDS_V1.glob(f"{_CGROUP_PREFIX}{pid}-*")) if PIDS_V1.is_dir() else []


@contextlib.contextmanager
def _pids_cgroup(max_processes: int) -> Iterator[Path | None]:
    """A fresh ``pids`` cgroup capped at ``max_processes`` (None where none can be made and none is
    needed); every process left in it is killed on the way out."""
    if os.geteuid() != 0:
        yield None  # RLIMIT_NPROC binds a user other than root, counted inside the sandbox's namespace
        return
    group = PIDS_V1 / f"{_CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
        (group / "pids.max").write_text(str(max_processes))
    except OSError as exc:
        raise SandboxUnavailable("the archive runs as root and cannot create a pids cgroup "
                                 f"({exc.strerror}), so a package's processes cannot be capped") from exc  # fmt: skip
    try:
        yield group
    finally:
        for _ in range(100):
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.02)
        else:
            log.error("sandbox cgroup %s could not be removed", group)


def _drain(stream: object, sink: bytearray, cap: int, keep_tail: bool, overflow: threading.Event) -> None:
    read = stream.read  # type: ignore[attr-defined]
    while chunk := read(65536):
        sink.extend(chunk)
        if len(sink) > cap:
            if keep_tail:
                del sink[: len(sink) - cap]
            else:
                overflow.set()
                return


def run_sandboxed(env: PackageEnv, case_dir: Path, limits: Limits, *,
                  should_stop: Callable[[], bool] = lambda: False) -> SandboxOutcome:  # fmt: skip
    """Run ``env``'s plugin on the case in ``case_dir`` under ``limits``; never raises for what the
    package does (only :class:`SandboxUnavailable` for what the machine lacks)."""
    command = bwrap_command(env, case_dir, limits)
    started = time.monotonic()
    with _pids_cgroup(limits.max_processes) as group:
        wrapper = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(group / "cgroup.procs")] if group else []
        proc = subprocess.Popen([*wrapper, *_rlimits(limits), *command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                env=CLEAN_ENV)  # fmt: skip
        answer, logs, overflow = bytearray(), bytearray(), threading.Event()
        readers = [threading.Thread(target=_drain, args=(proc.stdout, answer, limits.max_answer_mb << 20, False,
                                                         overflow), daemon=True),
                   threading.Thread(target=_drain, args=(proc.stderr, logs, STDERR_TAIL, True, overflow),
                                    daemon=True)]  # fmt: skip
        for reader in readers:
            reader.start()
        stopped = ""
        deadline = started + limits.wall_s
        while proc.poll() is None:
            if time.monotonic() > deadline:
                stopped = f"the package ran past its wall-time limit of {limits.wall_s:g} s and was stopped"
            elif overflow.is_set():
                stopped = f"the package's answer exceeded {limits.max_answer_mb} MiB and it was stopped"
            elif should_stop():
                stopped = STOPPED
            if stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        code = proc.wait()
    for reader in readers:
        reader.join(5)
    wall = time.monotonic() - started
    tail = logs.decode("utf-8", "replace")
    if stopped:
        return SandboxOutcome(error=stopped, log_tail=tail, wall_s=wall)
    return _interpret(code, bytes(answer), tail, limits, wall)


def _interpret(code: int, answer: bytes, tail: str, limits: Limits, wall: float) -> SandboxOutcome:
    try:
        reply = json.loads(answer) if answer.strip() else None
    except ValueError:
        reply = None
    if isinstance(reply, dict) and reply.get("ok") is True and isinstance(reply.get("findings"), dict):
        return SandboxOutcome(findings_json=json.dumps(reply["findings"]), log_tail=tail, wall_s=wall)
    if isinstance(reply, dict) and isinstance(reply.get("error"), str):
        error = reply["error"]
        if error.startswith("MemoryError"):
            return SandboxOutcome(error=f"the package ran out of memory (limit {limits.memory_mb} MiB): {error}",
                                  log_tail=tail, wall_s=wall)  # fmt: skip
        return SandboxOutcome(error=f"the package failed: {error}", log_tail=tail, wall_s=wall)
    signum = code - 128 if code > 128 else -code if code < 0 else 0  # bwrap reports a signal as 128 + n
    if signum:
        try:
            sig = signal.Signals(signum)
        except ValueError:
            return SandboxOutcome(error=f"the package was killed by signal {signum}", log_tail=tail, wall_s=wall)
        limit = {signal.SIGXCPU: f" (CPU time limit {limits.cpu_s} s)",
                 signal.SIGXFSZ: f" (file size limit {limits.scratch_mb} MiB)"}.get(sig, "")  # fmt: skip
        return SandboxOutcome(error=f"the package was killed by {sig.name}{limit}", log_tail=tail, wall_s=wall)
    return SandboxOutcome(error=f"the package exited with code {code} without an answer", log_tail=tail, wall_s=wall)
