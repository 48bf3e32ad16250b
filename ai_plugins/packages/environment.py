"""A package's environment: its file, checked against its SHA-256, unpacked into a folder of its own
with its dependency wheels installed there offline (``pip --no-index --no-deps --target``), then made
read-only. The archive's nodes build one under ``DATA_DIR/packages/envs/<sha256>``, edge workers
under their cache directory; both through :func:`install_environment`, so a package runs from the
same tree wherever it runs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ai_plugins.packages.manifest import MANIFEST, InvalidPackage, PackageManifest, parse_manifest, unpack
from pacs.errors import CloudfilmError


class DigestMismatch(CloudfilmError):
    """A package file whose SHA-256 is not the one it was asked for by: never installed."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def install_environment(data: bytes, digest: str, target: Path) -> bool:
    """Install the package file ``data`` into ``target`` unless it is there already; ``True`` when it
    was installed now. ``data`` must hash to ``digest`` (:class:`DigestMismatch` otherwise, before
    anything is unpacked). Concurrent builders of one digest each unpack into their own staging
    folder beside ``target``; the first rename wins."""
    if target.is_dir():
        return False
    actual = sha256_hex(data)
    if actual != digest:
        raise DigestMismatch(f"the package file's SHA-256 is {actual}, not {digest}; it was not installed")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
    try:
        wheels = unpack(data, staging)
        if wheels:
            done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                                   "--no-compile", "--disable-pip-version-check", "--target", str(staging),
                                   *map(str, wheels)], capture_output=True, text=True, timeout=600,
                                  env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, check=False)  # fmt: skip
            if done.returncode:
                last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
                raise InvalidPackage(f"the package's dependency wheels cannot be installed: {last}")
            shutil.rmtree(staging / "wheels")
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # else another builder of the same digest got there first
                raise
            _remove(staging)
            return False
        for path in [target, *target.rglob("*")]:  # readable inside the sandbox, writable by no one
            path.chmod(0o555 if path.is_dir() else 0o444)
    except BaseException:
        _remove(staging)
        raise
    return True


def installed_manifest(root: Path) -> PackageManifest:
    """The manifest of an installed environment (unpacked with the rest of the package file)."""
    try:
        return parse_manifest((root / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise InvalidPackage(f"the environment {root} holds no {MANIFEST}") from None


def _remove(staging: Path) -> None:
    if not staging.exists():
        return
    for path in [staging, *staging.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(staging, ignore_errors=True)
