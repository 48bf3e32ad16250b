"""Algorithm package files for tests, built the way a vendor's build would: a zip with the manifest,
the plugin code, its weights and its pinned dependencies as wheels (made here, nothing downloaded)."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import Mapping

#: A deterministic detector: study score and lesion points from the study's pixels, scaled by its
#: weights file, squashed by a function of its dependency wheel.
DETECTOR = '''
import json
from pathlib import Path

import numpy as np
from acme_util import squash

from ai_plugins.sdk import Classification, Finding, Findings, InputFilter, Plugin, Point3D, codes

WEIGHTS = json.loads((Path(__file__).with_name("weights.json")).read_text())


class Detector(Plugin):
    name = "{name}"
    version = "{version}"
    vendor = "Acme"
    input_filter = InputFilter(modalities=("CT",), min_slices=2)

    def run(self, study):
        series = study.select(self.input_filter)[0]
        volume = series.volume
        values = volume.array
        peak = np.unravel_index(int(np.argmax(values)), values.shape)
        x, y, z = (float(v) for v in volume.index_to_patient(np.asarray([peak], dtype=float))[0])
        score = squash(float(values.max()) * WEIGHTS["scale"] - WEIGHTS["offset"])
        frame = str(series.datasets[0].FrameOfReferenceUID)
        return Findings(
            evaluated_series=[series.series_uid],
            classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=round(score, 6))],
            findings=[Finding(code=codes.NODULE, probability=round(score, 6), label="Brightest spot",
                              region=Point3D(x=round(x, 3), y=round(y, 3), z=round(z, 3),
                                             frame_of_reference_uid=frame))],
            summary="acme",
        )
'''

UTIL = "import math\n\n\ndef squash(v: float) -> float:\n    return 1.0 / (1.0 + math.exp(-v / 100.0))\n"


def wheel(name: str, version: str, modules: Mapping[str, str]) -> tuple[str, bytes]:
    """A minimal valid pure-Python wheel (PEP 427) holding ``modules`` ({module: source})."""
    stem = name.replace("-", "_")
    dist = f"{stem}-{version}.dist-info"
    files = {f"{m}.py": src.encode() for m, src in modules.items()}
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    files[f"{dist}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: cloudfilm-tests\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},{len(d)}"
              for p, d in files.items()]  # fmt: skip
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return f"{stem}-{version}-py3-none-any.whl", buf.getvalue()


def manifest(name: str, version: str, entry: str, resources: Mapping[str, float] | None = None) -> str:
    lines = [f'name = "{name}"', f'version = "{version}"', 'vendor = "Acme"', f'entry = "{entry}"',
             'intended_use = "Flags hyperdense lesions on chest CT for a radiologist to review."',
             "", "[input_filter]", 'modalities = ["CT"]', "min_slices = 2", "", "[resources]"]  # fmt: skip
    lines += [f"{k} = {v}" for k, v in (resources or {"memory_mb": 2048, "cpu_s": 120, "wall_s": 120}).items()]
    return "\n".join(lines) + "\n"


def package(name: str = "acme-detector", version: str = "1.0", *, code: str | None = None,
            resources: Mapping[str, float] | None = None, with_manifest: bool = True) -> bytes:  # fmt: skip
    """A directory archive (zip): manifest, ``acme_detector/`` code and weights, ``wheels/`` dependencies."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if with_manifest:
            zf.writestr("cloudfilm-package.toml", manifest(name, version, "acme_detector:Detector", resources))
        zf.writestr("acme_detector/__init__.py", code if code is not None else
                    DETECTOR.replace("{name}", name).replace("{version}", version))  # fmt: skip
        zf.writestr("acme_detector/weights.json", '{"scale": 1.0, "offset": 150.0}')
        whl_name, whl = wheel("acme-util", "0.3", {"acme_util": UTIL})
        zf.writestr(f"wheels/{whl_name}", whl)
    return buf.getvalue()


def hostile(name: str, body: str, resources: Mapping[str, float]) -> bytes:
    """A package whose ``run`` does ``body`` (indented into it) and then answers nothing useful."""
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    code = ("from ai_plugins.sdk import Findings, InputFilter, Plugin\n\n\nclass Detector(Plugin):\n"
            f"    name = \"{name}\"\n    version = \"1.0\"\n    vendor = \"Acme\"\n"
            "    input_filter = InputFilter(modalities=(\"CT\",))\n\n    def run(self, study):\n"
            f"{indented}\n        return Findings()\n")  # fmt: skip
    return package(name, "1.0", code=code, resources=resources)
