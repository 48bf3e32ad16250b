"""The viewer's AI findings: ``GET /api/studies/{uid}/findings`` over a study whose SRs came from the writer.

A synthetic CT with a known spherical lesion is stored with an SR the real TID 1500 writer made
from findings (a 3D point with a diameter, a polygon on one image, a study-level classification)
and an older SR of the same plugin. The endpoint must place the 3D point on the slice nearest the
lesion centre, within a pixel or two of where the lesion really is in the pixels; keep the polygon
as written; list the newest report first; and answer only within the caller's scope, never with
unreviewed AI output to a patient or a share visitor. The built-in
lesion detector's own SR, stored as the runner stores it, must circle its lesion too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from ai_plugins.builtin.lesion_detector import LesionDetector
from ai_plugins.sdk import (
    Classification,
    Finding,
    Findings,
    Measurement,
    PluginInfo,
    Point3D,
    Polygon,
    StudyInput,
    codes,
)
from ai_plugins.sr import build_measurement_report, build_result_objects
from pacs.accounts.shares import create_share
from tests.factories import Lesion, make_ct_case
from tests.viewer_api.portal.conftest import OTHER, OWNER, Site, build_site, store

LESION = Lesion((40.3, -25.7, 13.2), 18.0)
PLUGIN = PluginInfo(name="lesion-detector", version="1.2.3", vendor="cloudfilm")
OLD_PLUGIN = PluginInfo(name="lesion-detector", version="1.0", vendor="cloudfilm")
SEED = 707


@dataclass
class LesionStudy:
    """A stored CT with a lesion, its SRs, and the truth read from its pixels."""

    datasets: list[Dataset]  # in slice order, head first
    sr: Dataset  # the newest SR
    old_sr: Dataset
    slice_index: int  # the slice nearest the lesion centre
    centre_px: tuple[float, float]  # (column, row) of the lesion's centroid on that slice, SCOORD convention
    radius_px: float  # of the lesion's cross-section on that slice
    polygon: list[tuple[float, float]]

    @property
    def study_uid(self) -> str:
        return str(self.datasets[0].StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.datasets[0].SeriesInstanceUID)

    def sop(self, index: int) -> str:
        return str(self.datasets[index].SOPInstanceUID)


def _truth(with_lesion: list[Dataset], without: list[Dataset]) -> tuple[int, tuple[float, float], float]:
    """The slice where the lesion is widest, and the centroid and radius of its cross-section there.

    Same seed, same noise: the only pixels that differ between the two volumes are the lesion's.
    """
    masks = [a.pixel_array != b.pixel_array for a, b in zip(with_lesion, without, strict=True)]
    areas = [int(m.sum()) for m in masks]
    k = int(np.argmax(areas))
    rows, cols = np.nonzero(masks[k])
    return k, (float(cols.mean()) + 0.5, float(rows.mean()) + 0.5), math.sqrt(areas[k] / math.pi)


def _findings(datasets: list[Dataset], k: int, centre: tuple[float, float], probability: float) -> Findings:
    cx, cy = centre
    frame_of_reference = str(datasets[0].FrameOfReferenceUID)
    return Findings(
        evaluated_series=[str(datasets[0].SeriesInstanceUID)],
        classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=0.93)],
        findings=[
            Finding(code=codes.NODULE, probability=probability, label="Lesion 1",
                    region=Point3D(x=LESION.center_mm[0], y=LESION.center_mm[1], z=LESION.center_mm[2],
                                   frame_of_reference_uid=frame_of_reference),
                    measurements=[Measurement(name=codes.DIAMETER, value=2 * LESION.radius_mm, unit=codes.UCUM_MM)]),
            Finding(code=codes.MASS, probability=0.55, label="Outline 1",
                    region=Polygon(sop_instance_uid=str(datasets[k].SOPInstanceUID),
                                   points=[(cx - 9, cy - 8), (cx + 9, cy - 8), (cx + 9, cy + 8), (cx - 9, cy + 8)])),
        ],
    )  # fmt: skip


def add_lesion_study(site: Site) -> LesionStudy:
    """Store the lesion CT of the patient account's patient, an older SR and a newer one, through ingest."""
    case = make_ct_case(OWNER, n_slices=24, rows=128, cols=128, lesion=LESION, seed=SEED,
                        study_description="CT CHEST AI")  # fmt: skip
    plain = make_ct_case(OWNER, n_slices=24, rows=128, cols=128, lesion=None, seed=SEED)
    k, centre, radius = _truth(case.datasets, plain.datasets)
    old = build_measurement_report(_findings(case.datasets, k, centre, 0.71), case.datasets, OLD_PLUGIN)
    old["ContentDate"].value, old["ContentTime"].value = "20240115", "100000"  # an earlier run
    new = build_measurement_report(_findings(case.datasets, k, centre, 0.91), case.datasets, PLUGIN,
                                   series_number=9101)  # fmt: skip
    store(site.archive, [*case.datasets, old, new])
    cx, cy = centre
    polygon = [(cx - 9, cy - 8), (cx + 9, cy - 8), (cx + 9, cy + 8), (cx - 9, cy + 8)]
    return LesionStudy(case.datasets, new, old, k, centre, radius, polygon)


@dataclass
class FindingsSite:
    site: Site
    lesion: LesionStudy
    visitor: TestClient  # opened a share link of the lesion study


@pytest.fixture(scope="module")
def findings_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FindingsSite]:
    for site in build_site(Path(tmp_path_factory.mktemp("findings"))):
        lesion = add_lesion_study(site)
        share = create_share(site.archive.engine, site.app.state.authenticator.key, lesion.study_uid,
                             created_by=None, expires_in_days=7, max_days=365)  # fmt: skip
        with site.new_client() as visitor:
            assert visitor.get(f"/s/{share.token}").status_code == 200
            yield FindingsSite(site, lesion, visitor)


def _get(client: TestClient, study_uid: str) -> Any:
    return client.get(f"/api/studies/{study_uid}/findings", headers={"Accept": "application/json"})


def _rows(fs: FindingsSite, kind: str = "physician") -> list[dict[str, Any]]:
    client = fs.visitor if kind == "visitor" else fs.site.client(kind)
    response = _get(client, fs.lesion.study_uid)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    rows: list[dict[str, Any]] = response.json()["findings"]
    return rows


def _current(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    [row] = [r for r in rows if r["label"] == label and not r["superseded"]]
    return row


def test_the_3d_point_lands_on_the_lesion_slice_as_a_circle_of_its_diameter(findings_site: FindingsSite) -> None:
    lesion = findings_site.lesion
    nodule = _current(_rows(findings_site), "Nodule")
    # the slice nearest the centre by geometry is the one where the lesion is widest in the pixels
    z = [float(ds.ImagePositionPatient[2]) for ds in lesion.datasets]
    assert int(np.argmin([abs(v - LESION.center_mm[2]) for v in z])) == lesion.slice_index
    assert nodule["sop_uid"] == lesion.sop(lesion.slice_index)
    assert nodule["series_uid"] == lesion.series_uid and nodule["frame"] == 1
    assert nodule["projected"] is True and nodule["distance_mm"] == pytest.approx(0.7, abs=0.01)
    assert nodule["shape"] == "circle"
    (cx, cy), (ex, ey) = nodule["points"]
    assert math.dist((cx, cy), lesion.centre_px) < 1.0, (nodule["points"], lesion.centre_px)
    spacing = float(lesion.datasets[0].PixelSpacing[1])
    assert math.dist((cx, cy), (ex, ey)) == pytest.approx(LESION.radius_mm / spacing, abs=0.01)
    assert abs(math.dist((cx, cy), (ex, ey)) - lesion.radius_px) < 1.5  # the drawn circle hugs the lesion
    assert nodule["plugin"] == "lesion-detector@1.2.3"
    assert nodule["text"] == "Lesion 1 · probability 0.91 · Diameter 36.0 mm"
    assert nodule["probability"] == pytest.approx(0.91)
    assert nodule["measurements"] == [{"name": "Diameter", "value": 36.0, "unit": "mm"}]
    assert nodule["code"]["value"] == codes.NODULE.value


def test_the_polygon_stays_where_it_was_drawn(findings_site: FindingsSite) -> None:
    lesion = findings_site.lesion
    mass = _current(_rows(findings_site), "Mass")
    assert mass["sop_uid"] == lesion.sop(lesion.slice_index) and mass["frame"] == 1
    assert mass["series_uid"] == lesion.series_uid
    assert mass["shape"] == "polygon" and mass["projected"] is False
    assert np.allclose(mass["points"], lesion.polygon, atol=0.01)  # FL graphic data: float32 precision
    assert mass["text"] == "Outline 1 · probability 0.55"


def test_newest_report_first_older_ones_kept_and_marked(findings_site: FindingsSite) -> None:
    lesion = findings_site.lesion
    rows = _rows(findings_site)
    assert [(r["kind"], r["label"], r["superseded"]) for r in rows] == [
        ("classification", "High density lesion", False), ("finding", "Nodule", False), ("finding", "Mass", False),
        ("classification", "High density lesion", True), ("finding", "Nodule", True), ("finding", "Mass", True),
    ]  # fmt: skip
    assert {r["report_uid"] for r in rows[:3]} == {str(lesion.sr.SOPInstanceUID)}
    assert {r["report_uid"] for r in rows[3:]} == {str(lesion.old_sr.SOPInstanceUID)}
    assert rows[0]["text"] == "study level · probability 0.93" and rows[0]["points"] == []
    assert rows[4]["plugin"] == "lesion-detector@1.0" and rows[4]["text"].endswith("earlier report")
    assert rows[4]["points"] == rows[1]["points"]  # an older report still draws
    assert rows[3]["report_datetime"] == "2024-01-15T10:00:00"


def test_staff_get_the_same_findings(findings_site: FindingsSite) -> None:
    assert _rows(findings_site, "admin") == _rows(findings_site)


@pytest.mark.parametrize("kind", ["patient", "visitor"])
def test_patients_and_share_visitors_get_no_unreviewed_findings(findings_site: FindingsSite, kind: str) -> None:
    """Nothing here was reviewed by a physician: the study's own patient and its share link see none
    (issue 13; ``tests/viewer_api/portal/test_patient_film.py`` covers the reviewed ones)."""
    assert _rows(findings_site, kind) == []


@pytest.mark.parametrize("kind", ["patient", "vendor", "share", "visitor"])
def test_a_study_outside_the_callers_scope_is_not_found(findings_site: FindingsSite, kind: str) -> None:
    site = findings_site.site
    client = findings_site.visitor if kind == "visitor" else site.client(kind)
    other = site.other_uid if kind != "share" else findings_site.lesion.study_uid  # "share" opened another study
    response = _get(client, other)
    assert response.status_code == 404, response.text
    assert "findings" not in response.text
    assert _get(client, "1.2.3.4.5.404").status_code == 404


def test_anonymous_callers_must_sign_in(findings_site: FindingsSite) -> None:
    assert _get(findings_site.site.client("anonymous"), findings_site.lesion.study_uid).status_code == 401


def test_the_lesion_detectors_own_report_circles_the_lesion(findings_site: FindingsSite) -> None:
    """The built-in plugin's SR (and SEG), as the runner stores them, on another patient's CT."""
    lesion = Lesion((-60.0, 20.0, 10.0), 22.0)
    case = make_ct_case(OTHER, n_slices=24, rows=96, cols=96, lesion=lesion, seed=11)
    k, centre, radius = _truth(case.datasets, make_ct_case(OTHER, n_slices=24, rows=96, cols=96, seed=11).datasets)
    study = StudyInput.from_datasets(case.datasets)
    detector = LesionDetector()
    objects = build_result_objects(detector.run(study), study, detector.info())
    store(findings_site.site.archive, [*case.datasets, *objects])
    rows = _get(findings_site.site.client("physician"), case.study_uid).json()["findings"]
    [found] = [r for r in rows if r["kind"] == "finding"]
    assert found["plugin"] == detector.info().key and found["sop_uid"] == str(case.datasets[k].SOPInstanceUID)
    assert found["shape"] == "circle" and found["projected"] is True
    (cx, cy), edge = found["points"]
    assert math.dist((cx, cy), centre) < 1.5 and abs(math.dist((cx, cy), edge) - radius) < 1.5
    assert "Diameter" in found["text"] and rows[0]["kind"] == "classification"


def test_a_study_without_sr_has_an_empty_list(findings_site: FindingsSite) -> None:
    site = findings_site.site
    for kind in ("physician", "share"):
        response = _get(site.client(kind), site.owned_uid)
        assert response.status_code == 200 and response.json() == {"findings": []}
