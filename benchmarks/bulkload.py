"""Bulk-load synthetic index rows (no objects) for query benchmarks at scale.

Writes patients, studies, series and instances straight into the index (executemany on SQLite,
COPY on PostgreSQL), far faster than ingesting files; the rows look like what ingest writes (names
folded, counts exact, metadata JSON per instance), so query timings and plans are representative.
On PostgreSQL the id sequences are moved past the loaded rows, so ingest can go on afterwards.
"""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime

from sqlalchemy import Engine, Table, func, insert, select, text, update

from pacs.index.models import Instance, Patient, Series, Study
from pacs.names import normalize_pn

FIRST = ["John", "Maria", "Jürgen", "Zoë", "José", "Anna", "Wei", "Fatima", "Olga", "Siobhán", "Taro", "Ines"]
LAST = ["Doe", "Müller", "Łukasiewicz", "Núñez", "Berg", "Yamada", "O'Brien", "Smith", "Kowalski", "Rossi",
        "Dubois", "Nakamura", "Silva", "Novak", "Jensen", "Horvat"]
MODALITIES = ["CT", "CT", "CT", "MR", "MR", "CR", "US", "DX"]


def bulk_load(engine: Engine, *, studies: int, instances_per_study: int, series_per_study: int = 2,
              seed: int = 0, batch: int = 5000, large_study: int = 0) -> None:
    """``studies`` studies of ``instances_per_study`` instances; with ``large_study`` the last one
    holds that many instances instead (UID ``1.2.826.0.1.3680043.10.1.{studies - 1}``)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    n_patients = max(1, studies // 3)
    patients = []
    for p in range(n_patients):
        name = f"{rng.choice(LAST)}^{rng.choice(FIRST)}"
        patients.append({"id": p + 1, "patient_id": f"PID{p:07d}", "issuer": "", "patient_name": name,
                         "patient_name_norm": normalize_pn(name), "birth_date": f"19{rng.randint(30, 99)}0101",
                         "sex": rng.choice("MF"), "study_count": 0, "series_count": 0, "instance_count": 0,
                         "size_bytes": 0, "created_at": now, "updated_at": now})
    study_rows: list[dict[str, object]] = []
    series_rows: list[dict[str, object]] = []
    inst_rows: list[dict[str, object]] = []
    series_id = 0
    inst_id = 0
    _insert(engine, Patient.__table__, patients)  # type: ignore[arg-type]
    for s in range(studies):
        pat = patients[s % n_patients]
        pat["study_count"] += 1
        study_uid = f"1.2.826.0.1.3680043.10.1.{s}"
        mods = sorted({rng.choice(MODALITIES) for _ in range(series_per_study)})
        study_rows.append({
            "id": s + 1, "study_uid": study_uid, "patient_fk": pat["id"], "patient_id": pat["patient_id"],
            "issuer": "", "patient_name": pat["patient_name"], "patient_name_norm": pat["patient_name_norm"],
            "birth_date": pat["birth_date"], "sex": pat["sex"],
            "study_date": f"20{rng.randint(10, 25):02d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
            "study_time": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}00", "accession_number": f"ACC{s:08d}",
            "study_id": str(s), "study_description": "CT THORAX", "referring_physician": "Curie^Marie",
            "referring_physician_norm": "curie marie", "institution_name": "Cloudfilm General",
            "modalities": "\\".join(mods), "specific_charset": "ISO_IR 192", "series_count": series_per_study,
            "instance_count": instances_per_study, "size_bytes": instances_per_study * 526_000,
            "created_at": now, "last_instance_at": now,
        })
        in_study = large_study if large_study and s == studies - 1 else instances_per_study
        per_series = max(1, in_study // series_per_study)
        study_rows[-1].update(instance_count=per_series * series_per_study,
                              size_bytes=per_series * series_per_study * 526_000)
        for k in range(series_per_study):
            series_id += 1
            series_uid = f"{study_uid}.{k + 1}"
            series_rows.append({
                "id": series_id, "series_uid": series_uid, "study_fk": s + 1, "modality": mods[k % len(mods)],
                "series_number": k + 1, "series_description": "Axial", "body_part": "CHEST",
                "series_date": "", "series_time": "", "pps_start_date": "", "pps_start_time": "",
                "instance_count": per_series, "size_bytes": per_series * 526_000, "created_at": now,
            })
            for i in range(per_series):
                inst_id += 1
                sop = f"{series_uid}.{i + 1}"
                meta = {"00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                        "00080018": {"vr": "UI", "Value": [sop]},
                        "00100010": {"vr": "PN", "Value": [{"Alphabetic": pat["patient_name"]}]},
                        "00200013": {"vr": "IS", "Value": [i + 1]},
                        "00280010": {"vr": "US", "Value": [512]}, "00280011": {"vr": "US", "Value": [512]},
                        "7FE00010": {"vr": "OW", "BulkDataURI": f"studies/{study_uid}/series/{series_uid}/"
                                                                f"instances/{sop}/bulk/7FE00010"}}
                inst_rows.append({
                    "id": inst_id, "sop_uid": sop, "series_fk": series_id, "study_fk": s + 1,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "instance_number": i + 1, "rows": 512,
                    "columns": 512, "number_of_frames": 1, "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "object_key": f"{study_uid}/{series_uid}/{sop}.0000000000000000.dcm", "size_bytes": 526_000,
                    "sha256": "0" * 64, "metadata_json": json.dumps(meta, separators=(",", ":")),
                    "frames_json": "[[1000,524288]]", "encapsulated": False, "created_at": now,
                })
        if len(inst_rows) >= batch:
            _flush(engine, study_rows, series_rows, inst_rows)
    _flush(engine, study_rows, series_rows, inst_rows)
    with engine.begin() as conn:
        where = Study.patient_fk == Patient.id
        conn.execute(update(Patient).values(
            study_count=select(func.count(Study.id)).where(where).scalar_subquery(),
            series_count=select(func.coalesce(func.sum(Study.series_count), 0)).where(where).scalar_subquery(),
            instance_count=select(func.coalesce(func.sum(Study.instance_count), 0)).where(where).scalar_subquery(),
            size_bytes=select(func.coalesce(func.sum(Study.size_bytes), 0)).where(where).scalar_subquery(),
        ))
        if conn.dialect.name == "postgresql":  # the rows came with their ids: move the sequences past them
            for table in ("patients", "studies", "series", "instances"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"))


def _flush(engine: Engine, studies: list[dict[str, object]], series: list[dict[str, object]],
           instances: list[dict[str, object]]) -> None:
    for table, rows in ((Study.__table__, studies), (Series.__table__, series), (Instance.__table__, instances)):
        _insert(engine, table, rows)  # type: ignore[arg-type]
    studies.clear()
    series.clear()
    instances.clear()


def _insert(engine: Engine, table: Table, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
        return
    # COPY ... CSV: every column named, the model's Python-side defaults filled in as executemany would.
    columns = [c for c in table.columns if c.name in rows[0] or (c.default is not None and c.default.is_scalar)]
    defaults = {c.name: c.default.arg for c in columns if c.default is not None and c.default.is_scalar}  # type: ignore[attr-defined]
    out = io.StringIO()
    for row in rows:
        out.write(",".join(_csv(row.get(c.name, defaults.get(c.name))) for c in columns))
        out.write("\n")
    out.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cur:
            names = ", ".join(f'"{c.name}"' for c in columns)
            cur.copy_expert(f"COPY {table.name} ({names}) FROM STDIN WITH (FORMAT csv)", out)
        raw.commit()
    finally:
        raw.close()


def _csv(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    text_value = value.isoformat() if isinstance(value, datetime) else str(value)
    return '"' + text_value.replace('"', '""') + '"'
