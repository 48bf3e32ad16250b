"""Start-up overhead of the package sandbox per case; prints a table.

    .venv/bin/python benchmarks/sandbox_bench.py [--runs 15]

A package whose plugin answers empty findings at once runs on a one-instance CT case, three ways,
alternating so machine load hits each alike; medians of ``--runs``:

* ``sandboxed``: what the archive does per case (:func:`ai_plugins.sandbox.run_sandboxed`): a pids
  cgroup (as root), ``prlimit``, ``bwrap --unshare-all`` with its mounts, the Python interpreter,
  the SDK's imports (pydantic, numpy, pydicom), the plugin, the answer read back.
* ``bare process``: the same entry program and paths in a plain ``python -I`` child, no sandbox:
  what any fresh process per case costs (interpreter and imports).
* ``bwrap + limits only``: ``bwrap`` with the same mounts running ``/bin/true`` under the same
  limits: the sandbox's own set-up and tear-down.

The sandbox's own overhead per case is ``bwrap + limits only`` (and ``sandboxed - bare process``
where load allows comparing them); what a case costs to start in all is ``sandboxed``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_plugins.sandbox import Limits, PackageEnv, run_sandboxed  # noqa: E402
from ai_plugins.sandbox.run import CLEAN_ENV, ENTRY, SDK, _deps_dirs, _pids_cgroup, _python, _rlimits, bwrap_command  # noqa: E402
from tests.factories import make_study_set, to_bytes  # noqa: E402

NOOP = ("from ai_plugins.sdk import Findings, Plugin\n\n\nclass Noop(Plugin):\n    name = 'noop'\n"
        "    version = '1.0'\n    vendor = 'bench'\n\n    def run(self, study):\n"
        "        return Findings()\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    limits = Limits(memory_mb=2048, cpu_s=60, wall_s=60, scratch_mb=64)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "env" / "noop").mkdir(parents=True)
        (root / "env" / "noop" / "__init__.py").write_text(NOOP)
        (root / "case").mkdir()
        case = make_study_set(1, n_slices=1, rows=64, cols=64, seed=1, modalities=["CT"])[0]
        (root / "case" / "0.dcm").write_bytes(to_bytes(case.datasets[0]))
        env = PackageEnv(root / "env", "noop:Noop")
        sdk_root = root / "sdk"
        (sdk_root / "ai_plugins").mkdir(parents=True)
        (sdk_root / "ai_plugins" / "sdk").symlink_to(SDK)
        bare = [str(_python()), "-I", str(ENTRY), env.plugin_ref, str(root / "case"), str(env.root), str(sdk_root),
                *_deps_dirs()]  # fmt: skip
        command = bwrap_command(env, root / "case", limits)
        only = [*command[: command.index("--chdir")], "/bin/true"]
        times: dict[str, list[float]] = {"sandboxed": [], "bare process": [], "bwrap + limits only": []}
        for _ in range(args.runs):
            started = time.monotonic()
            outcome = run_sandboxed(env, root / "case", limits)
            times["sandboxed"].append(time.monotonic() - started)
            assert outcome.ok, outcome
            started = time.monotonic()
            done = subprocess.run(bare, capture_output=True, env=CLEAN_ENV, check=False)
            times["bare process"].append(time.monotonic() - started)
            assert b'"ok": true' in done.stdout, done.stderr
            started = time.monotonic()
            with _pids_cgroup(limits.max_processes) as group:
                wrapper = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(group / "cgroup.procs")] if group else []
                subprocess.run([*wrapper, *_rlimits(limits), *only], env=CLEAN_ENV, check=True)
            times["bwrap + limits only"].append(time.monotonic() - started)
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"{'per case (median of ' + str(args.runs) + ')':32} {'seconds':>8}  {'min':>6}  {'max':>6}")
    for name, values in times.items():
        print(f"{name:32} {medians[name]:8.3f}  {min(values):6.3f}  {max(values):6.3f}")
    print(f"{'sandboxed - bare process':32} {medians['sandboxed'] - medians['bare process']:8.3f}")


if __name__ == "__main__":
    main()
