"""An algorithm package's file: a wheel or a directory archive (zip, tar, tar.gz) holding
``cloudfilm-package.toml`` at its root, the plugin code, its weights and, under ``wheels/``, its
pinned dependencies as wheels (installed offline at admission).

Reading one never runs its code: the manifest is parsed, every member's name and kind checked
(no absolute paths, no ``..``, no links or devices) and the unpacked size bounded.
"""

from __future__ import annotations

import io
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ai_plugins.sandbox.limits import Limits
from ai_plugins.sdk import InputFilter, PluginInfo
from ai_plugins.sdk.plugin import NAME_PATTERN
from pacs.errors import CloudfilmError

MANIFEST = "cloudfilm-package.toml"
MAX_UNPACKED = 8 << 30
MAX_MEMBERS = 100_000
REF_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class InvalidPackage(CloudfilmError):
    """A package file that cannot be accepted (HTTP 400), with one sentence saying why."""


class Resources(BaseModel):
    """What one case may use (the site caps each value, :attr:`Settings.package_limits`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_mb: int = Field(default=4096, ge=256, le=262_144)
    cpu_s: int = Field(default=600, ge=1, le=86_400)
    wall_s: float = Field(default=900.0, gt=0, le=6 * 3600.0)
    scratch_mb: int = Field(default=1024, ge=1, le=65_536)

    def limits(self) -> Limits:
        return Limits(memory_mb=self.memory_mb, cpu_s=self.cpu_s, wall_s=self.wall_s, scratch_mb=self.scratch_mb)


class PackageManifest(BaseModel):
    """``cloudfilm-package.toml``: who the plugin is, what it reads, what it may use, what it is for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")
    vendor: str = Field(min_length=1, max_length=64)
    entry: str = Field(max_length=256, pattern=REF_PATTERN, description="module:Class of the plugin")
    description: str = Field(default="", max_length=1024)
    intended_use: str = Field(min_length=1, max_length=2048)
    input_filter: InputFilter = Field(default_factory=InputFilter)
    resources: Resources = Field(default_factory=Resources)

    def info(self) -> PluginInfo:
        return PluginInfo(name=self.name, version=self.version, vendor=self.vendor, description=self.description,
                          intended_use=self.intended_use, input_filter=self.input_filter)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Member:
    path: PurePosixPath
    size: int
    directory: bool


def _check(name: str, kind_ok: bool) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not kind_ok or "\\" in name:
        raise InvalidPackage(f"the package holds a member that cannot be unpacked safely: {name!r}")
    return path


def members(data: bytes) -> Iterator[tuple[Member, bytes | None]]:
    """Each member of the archive with its bytes (``None`` for directories), checked as it goes."""
    total = count = 0
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for zinfo in zf.infolist():
                mode = zinfo.external_attr >> 16
                is_link = (mode & 0o170000) == 0o120000
                path = _check(zinfo.filename, not is_link)
                total, count = total + zinfo.file_size, count + 1
                if total > MAX_UNPACKED or count > MAX_MEMBERS:
                    raise InvalidPackage("the package unpacks to more than 8 GiB or 100,000 files")
                yield Member(path, zinfo.file_size, zinfo.is_dir()), None if zinfo.is_dir() else zf.read(zinfo)
        return
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")  # noqa: SIM115 (closed by the with below)
    except tarfile.TarError as exc:
        raise InvalidPackage("the package is neither a wheel, a zip nor a tar archive") from exc
    with tf:
        for info in tf:
            path = _check(info.name, info.isfile() or info.isdir())
            total, count = total + info.size, count + 1
            if total > MAX_UNPACKED or count > MAX_MEMBERS:
                raise InvalidPackage("the package unpacks to more than 8 GiB or 100,000 files")
            fh = tf.extractfile(info) if info.isfile() else None
            yield Member(path, info.size, info.isdir()), None if fh is None else fh.read()


def read_manifest(data: bytes) -> PackageManifest:
    """The manifest of a package file (the archive is checked member by member on the way)."""
    found: bytes | None = None
    for member, content in members(data):
        if member.path == PurePosixPath(MANIFEST):
            found = content
    if found is None:
        raise InvalidPackage(f"the package has no {MANIFEST} at its root")
    return parse_manifest(found)


def parse_manifest(found: bytes) -> PackageManifest:
    """The manifest of ``cloudfilm-package.toml``'s bytes, or :class:`InvalidPackage` with where it is wrong."""
    try:
        return PackageManifest.model_validate(tomllib.loads(found.decode("utf-8")))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidPackage(f"{MANIFEST} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidPackage(f"{MANIFEST}: {where}: {first['msg']}") from exc


def unpack(data: bytes, dest: Path) -> list[Path]:
    """Write the package's files under ``dest``; the dependency wheels under ``wheels/`` are returned
    instead (they are installed, not copied)."""
    wheels: list[Path] = []
    for member, content in members(data):
        target = dest.joinpath(*member.path.parts)
        if member.directory:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content or b"")
        if member.path.parts[0] == "wheels" and member.path.suffix == ".whl":
            wheels.append(target)
    return wheels
