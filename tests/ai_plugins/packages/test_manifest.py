"""Package files on purpose wrong: each refused with one sentence, before anything is unpacked or run."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from ai_plugins.packages.manifest import InvalidPackage, read_manifest
from tests.ai_plugins.packages.builder import manifest, package


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _tar_with_link() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = manifest("acme-detector", "1.0", "acme_detector:Detector").encode()
        info = tarfile.TarInfo("cloudfilm-package.toml")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("acme_detector/key")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/shadow"
        tf.addfile(link)
    return buf.getvalue()


GOOD = manifest("acme-detector", "1.0", "acme_detector:Detector")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "neither a wheel, a zip nor a tar archive"),
    (b"just some bytes", "neither a wheel, a zip nor a tar archive"),
    (_zip({"README": "x"}), "has no cloudfilm-package.toml at its root"),
    (_zip({"cloudfilm-package.toml": "name = "}), "is not valid TOML"),
    (_zip({"cloudfilm-package.toml": GOOD.replace('intended_use = "Flags', 'purpose = "Flags')}),
     "cloudfilm-package.toml: intended_use: Field required"),
    (_zip({"cloudfilm-package.toml": GOOD.replace("acme_detector:Detector", "os.system('x')")}),
     "cloudfilm-package.toml: entry: String should match pattern"),
    (_zip({"cloudfilm-package.toml": GOOD.replace("wall_s = 120", "wall_s = -1")}),
     "cloudfilm-package.toml: resources.wall_s: Input should be greater than 0"),
    (_zip({"cloudfilm-package.toml": GOOD, "../../etc/cron.d/evil": "x"}),
     "cannot be unpacked safely: '../../etc/cron"),
    (_zip({"cloudfilm-package.toml": GOOD, "/etc/evil": "x"}), "cannot be unpacked safely: '/etc/evil'"),
    (_tar_with_link(), "cannot be unpacked safely: 'acme_detector/key'"),
])  # fmt: skip
def test_bad_package_files_are_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(InvalidPackage) as caught:
        read_manifest(data)
    assert message in str(caught.value)


def test_a_good_package_and_a_wheel_shaped_one_are_read() -> None:
    assert read_manifest(package()).resources.memory_mb == 2048
    wheel_like = _zip({"cloudfilm-package.toml": GOOD, "acme_detector/__init__.py": "",
                       "acme_detector-1.0.dist-info/METADATA": "Name: acme-detector\n"})  # fmt: skip
    assert read_manifest(wheel_like).entry == "acme_detector:Detector"
