"""The pynetdicom internals the archive overrides are the ones they were written against
(pacs.dimse.overrides): the pin, a SHA-256 per replaced or relied-on function, every override listed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import tomllib
from pathlib import Path

import pynetdicom
from packaging.requirements import Requirement

import pacs.dimse.overrides
from pacs.dimse.overrides import PINNED, UPSTREAM
from tests.upstream import source_sha256

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_pynetdicom_is_pinned_to_the_release_the_overrides_were_written_against() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (declared,) = [d for d in dependencies if Requirement(d).name == "pynetdicom"]
    assert declared == PINNED, "pyproject.toml and pacs.dimse.overrides.PINNED must name the same pynetdicom"
    assert Requirement(PINNED).specifier.contains(pynetdicom.__version__), (
        f"pynetdicom {pynetdicom.__version__} is installed; the overrides were written for {PINNED}")


def test_the_upstream_code_is_unchanged() -> None:
    changed = []
    for up in UPSTREAM:
        digest = source_sha256(up.name)
        if digest != up.sha256:
            changed.append(f"{up.name} changed (now {digest}): re-check that {up.recheck}")
    assert not changed, ("pynetdicom code that pacs.dimse.overrides replaces or relies on has changed; after "
                         "re-checking, record the new SHA-256 in pacs.dimse.overrides.UPSTREAM:\n"
                         + "\n".join(changed))


def _overridden() -> set[str]:
    """Every pynetdicom method some class of pacs.dimse.overrides redefines, as its dotted upstream name."""
    out = set()
    for info in pkgutil.iter_modules(pacs.dimse.overrides.__path__):
        module = importlib.import_module(f"pacs.dimse.overrides.{info.name}")
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            for name, value in vars(cls).items():
                if not inspect.isfunction(value):
                    continue
                for base in cls.__mro__[1:]:
                    if name in vars(base):
                        if base.__module__.startswith("pynetdicom."):
                            out.add(f"{base.__module__}.{base.__qualname__}.{name}")
                        break
    return out


def test_every_override_is_guarded() -> None:
    overridden = _overridden()
    assert "pynetdicom.association.Association._run_reactor" in overridden  # the walk finds them
    unguarded = overridden - {up.name for up in UPSTREAM}
    assert not unguarded, f"overrides of pynetdicom code missing from pacs.dimse.overrides.UPSTREAM: {unguarded}"
