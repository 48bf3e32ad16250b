"""A study as a ZIP of its DICOM files with a DICOMDIR (PS3.10 file-set, PS3.3 F.2).

pydicom's ``FileSet`` lays the files out (``PT000000/ST000000/SE000000/IM000000``) and writes the
DICOMDIR; then each file is replaced by the instance exactly as the archive stored it, so the
download is byte-for-byte what arrived (the DICOMDIR records do not depend on file contents).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.retrieve import StoredInstance, find_instances, open_instance


def write_study_zip(archive: Archive, scope: AccessScope, study_uid: str) -> Path:
    """A temporary ZIP file (the caller deletes it) of every visible instance of the study.

    Built in the spool directory, where ``serve`` removes what a killed process left (``pacs.fsck``).
    """
    instances = find_instances(archive.engine, scope, study_uid=study_uid)  # NotFound when not visible
    spool = archive.settings.spool_dir
    spool.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="zip-", suffix=".work", dir=spool))
    try:
        originals = work / "originals"
        originals.mkdir()
        fileset = FileSet()
        fileset.ID = "CLOUDFILM"
        sources: dict[str, Path] = {}
        unindexed: list[tuple[StoredInstance, Path]] = []
        for n, inst in enumerate(instances):
            path = originals / f"{n:06d}.dcm"
            with open_instance(archive.store, inst) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            try:
                fileset.add(pydicom.dcmread(path, stop_before_pixels=False))
                sources[inst.sop_uid] = path
            except (ValueError, AttributeError, KeyError):
                unindexed.append((inst, path))  # lacks what a DICOMDIR record needs; shipped anyway
        layout = work / "fileset"
        layout.mkdir()
        if sources:
            fileset.write(layout)
            for record in fileset:
                original = sources.get(str(record.SOPInstanceUID))
                if original is not None:
                    shutil.copyfile(original, record.path)
        fd, zip_name = tempfile.mkstemp(prefix="zip-", suffix=".zip", dir=spool)
        os.close(fd)
        with zipfile.ZipFile(zip_name, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for file in sorted(layout.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(layout).as_posix())
            for inst, path in unindexed:
                zf.write(path, f"EXTRA/{inst.sop_uid}.dcm")
        return Path(zip_name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
