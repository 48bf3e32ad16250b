"""The core commands through the console script: import, fsck, db upgrade, version, settings errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from pacs.settings import Settings
from tests.cli import run_cli, settings_env
from tests.factories import make_ct_study, to_bytes, with_bad_uid, without, write_files


@pytest.mark.slow
def test_import_a_200_slice_ct_then_fsck(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "study"
    write_files(make_ct_study(n_slices=200, rows=512, cols=512, seed=42), folder / "nested")
    env = settings_env(settings)
    result = run_cli("import", str(folder), env=env)
    assert result.returncode == 0, result.stderr
    assert "200 stored, 0 duplicate, 0 rejected" in result.stdout
    check = run_cli("fsck", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "200 instances checked, 0 problems" in check.stdout
    again = run_cli("import", str(folder), env=env)
    assert "0 stored, 200 duplicate, 0 rejected" in again.stdout


def test_import_lists_each_rejected_file_with_its_reason(tmp_path: Path) -> None:
    good, other = make_ct_study(n_slices=2, seed=43)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.dcm").write_bytes(to_bytes(good))
    (folder / "notes.txt").write_text("not dicom\n" * 30)
    (folder / "no-study.dcm").write_bytes(to_bytes(without(other, "StudyInstanceUID")))
    (folder / "evil.dcm").write_bytes(to_bytes(with_bad_uid(other, "SOPInstanceUID", "1.2.3/../../etc")))
    env = {"CLOUDFILM_DATA_DIR": str(tmp_path / "data")}
    result = run_cli("import", str(folder), env=env)
    assert result.returncode == 1
    assert "1 stored, 0 duplicate, 3 rejected" in result.stdout
    err = " ".join(result.stderr.split())
    assert "notes.txt: the data is not a DICOM Part 10 file" in err
    assert "no-study.dcm: StudyInstanceUID is missing" in err
    assert "evil.dcm: SOPInstanceUID '1.2.3/../../etc' is not a valid UID" in err
    objects = [p for p in (tmp_path / "data" / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1 and ".." not in str(objects[0])


def test_invalid_setting_stops_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli("fsck", env={"CLOUDFILM_DATA_DIR": str(tmp_path), "CLOUDFILM_HTTP_PORT": "eighty"})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: invalid setting CLOUDFILM_HTTP_PORT: Input should be a valid integer, unable to parse "
                     "string as an integer"]


def test_config_file_and_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "cloudfilm.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-toml"}"\n[dicom]\nport = 11999\n')
    ok = run_cli("--config", str(config), "db", "upgrade")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "from-toml" / "index.sqlite3").exists()
    config.write_text('[dicom]\nport = "many"\n')
    bad = run_cli("--config", str(config), "db", "upgrade")
    assert bad.returncode == 2 and "CLOUDFILM_DICOM_PORT" in bad.stderr
    config.write_text("colour = 'blue'\n")
    unknown = run_cli("db", "upgrade", env={"CLOUDFILM_CONFIG": str(config)})
    assert unknown.returncode == 2 and "unknown setting 'colour'" in unknown.stderr


def test_version_and_db_upgrade(tmp_path: Path) -> None:
    assert run_cli("version").stdout.startswith("cloudfilm ")
    env = {"CLOUDFILM_DATA_DIR": str(tmp_path)}
    first = run_cli("db", "upgrade", env=env)
    assert first.returncode == 0 and "index at revision" in first.stdout
    assert run_cli("db", "upgrade", env=env).returncode == 0  # idempotent


@pytest.mark.parametrize("name", ["reportsi.dcm", "reportsi_with_empty_number_tags.dcm"])
def test_import_stores_pydicoms_sr_test_files(name: str, tmp_path: Path) -> None:
    """Seen in issue 12: refused with 'the file is truncated or has trailing bytes after its last element'."""
    result = run_cli("import", get_testdata_file(name), env={"CLOUDFILM_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 0, result.stderr
    assert "1 stored, 0 duplicate, 0 rejected" in result.stdout


def test_import_takes_data_sets_without_file_meta_and_names_each_skipped_file(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("ExplVR_BigEndNoMeta.dcm", "rtstruct.dcm", "README.txt"):
        (folder / name).write_bytes(Path(get_testdata_file(name)).read_bytes())
    result = run_cli("import", str(folder), env={"CLOUDFILM_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 1
    assert "2 stored, 0 duplicate, 1 rejected" in result.stdout
    err = " ".join(result.stderr.split())
    assert ("README.txt: the data is not a DICOM Part 10 file (no DICM prefix or file meta information) nor a "
            "DICOM data set") in err
