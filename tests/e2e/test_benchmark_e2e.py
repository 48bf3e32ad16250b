"""Benchmarks end to end, as users run them: ``cloudfilm serve`` and ``cloudfilm benchmark …`` in
subprocesses on 60 synthetic lesion studies; the built-in ``lesion-detector`` against a deliberately
random plugin; and the hidden-label matrix: a vendor's key on every route finds nothing of the test split.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from pacs.accounts.api_keys import create_api_key
from pacs.accounts.patients import link_patient
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.settings import Settings
from tests.ai_plugins.benchmarks.plugins import RandomPlugin
from tests.ai_plugins.sample_plugins import write_entry_points
from tests.e2e.test_ai_pipeline import running, wait_for, wait_http
from tests.factories import PATIENTS, CtCase, make_study_set, write_files
from tests.net import free_port

REPO = Path(__file__).resolve().parents[2]
CLOUDFILM = str(Path(sys.executable).with_name("cloudfilm"))
ADMIN_PASSWORD = "admin password 1"
SECRET = "e2e-benchmark-secret-0123456789"

pytestmark = pytest.mark.slow


@dataclass
class World:
    url: str
    env: dict[str, str]
    log: Path
    cases: list[CtCase]
    bench_id: int
    admin: dict[str, str]
    vendor: dict[str, str]
    patient: dict[str, str]
    test_uids: set[str]
    dev_uids: set[str]
    evaluations: dict[str, int]
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    share_url: str = ""

    @property
    def test_cases(self) -> list[CtCase]:
        return [c for c in self.cases if c.study_uid in self.test_uids]


def cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLOUDFILM, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _labels(path: Path, cases: list[CtCase], extra: list[list[str]] | None = None) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_uid", "x_mm", "y_mm", "z_mm", "radius_mm"])
        for c in cases:
            writer.writerow([c.study_uid, *c.lesion.center_mm, c.lesion.radius_mm] if c.lesion else
                            [c.study_uid, "", "", "", ""])  # fmt: skip
        writer.writerows(extra or [])
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("benchmark-e2e")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(data_dir=tmp / "data", secret_key=SECRET)  # type: ignore[arg-type]
    ep_dir = write_entry_points(tmp / "entry-points", {"test-random": RandomPlugin})
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(ep_dir), str(REPO)]), "COLUMNS": "200",
        "CLOUDFILM_DATA_DIR": str(settings.data_dir), "CLOUDFILM_HTTP_PORT": str(port),
        "CLOUDFILM_DICOM_ENABLED": "false", "CLOUDFILM_SECRET_KEY": SECRET, "CLOUDFILM_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "CLOUDFILM_STABLE_AGE": "3600", "CLOUDFILM_WORKER_CONCURRENCY": "1", "CLOUDFILM_JOB_POLL_INTERVAL": "0.2",
        "CLOUDFILM_BENCHMARK_BOOTSTRAP": "1000", "CLOUDFILM_LOG_LEVEL": "INFO",
    })  # fmt: skip
    cases = make_study_set(60, n_slices=16, rows=48, cols=48, seed=77, modalities=["CT"], lesion_fraction=0.5)
    write_files([ds for c in cases for ds in c.datasets], tmp / "studies")
    imported = cli(env, "import", str(tmp / "studies"))
    assert imported.returncode == 0 and "960 stored" in imported.stdout, imported.stderr
    with Archive.open(settings, migrate=False) as archive:
        create_user(archive.engine, "acme", "vendor password 1", "vendor")
        create_user(archive.engine, "pat", "patient password 1", "patient")
        link_patient(archive.engine, "pat", PATIENTS[0].patient_id)
        vendor = {"Authorization": f"Bearer {create_api_key(archive.engine, 'acme', 'cad')[1]}"}
        patient = {"Authorization": f"Bearer {create_api_key(archive.engine, 'pat', 'phone')[1]}"}
    log = tmp / "serve.log"
    with running(["serve"], env, log) as proc:
        wait_http(url, proc, log)
        token = httpx.post(f"{url}/api/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD}).json()
        admin = {"Authorization": f"Bearer {token['access_token']}"}
        outputs: dict[str, subprocess.CompletedProcess[str]] = {}
        outputs["create"] = cli(env, "benchmark", "create", "lesions", "--task", "detection",
                                "--description", "Hyperdense lesions on chest CT")  # fmt: skip
        bench_id = int(outputs["create"].stdout.split()[1])
        outputs["add"] = cli(env, "benchmark", "add-studies", "lesions", "--query", "ModalitiesInStudy=CT")
        outputs["bad labels"] = cli(env, "benchmark", "labels", "lesions", str(_labels(
            tmp / "bad.csv", cases[:3], [["1.2.3.4.5", "", "", "", ""], [cases[3].study_uid, "1", "2", "3", "big"]])))
        outputs["labels"] = cli(env, "benchmark", "labels", "lesions", str(_labels(tmp / "labels.csv", cases)))
        outputs["split"] = cli(env, "benchmark", "split", "lesions", "--seed", "11", "--test-fraction", "0.5")
        # a share link a physician made earlier, for a study that is now in the hidden test split
        cases_api = httpx.get(f"{url}/api/benchmarks/{bench_id}/cases", headers=admin, timeout=30).json()
        test_uids = {c["study_uid"] for c in cases_api["cases"] if c["split"] == "test"}
        share = httpx.post(f"{url}/api/studies/{sorted(test_uids)[0]}/shares", json={}, headers=admin, timeout=30)
        assert share.status_code == 201, share.text
        outputs["detector"] = cli(env, "benchmark", "evaluate", "lesions", "lesion-detector", "--concurrency", "2")
        outputs["random"] = cli(env, "benchmark", "evaluate", "lesions", "test-random@1.0", "--concurrency", "2")
        evaluations = {}
        for key in ("detector", "random"):
            assert outputs[key].returncode == 0, outputs[key].stdout + outputs[key].stderr
            evaluations[key] = int(outputs[key].stdout.split()[1].rstrip(":"))
        rerun = httpx.post(f"{url}/api/benchmarks/{bench_id}/evaluations", json={"plugin": "lesion-detector"},
                           headers=admin, timeout=30)  # fmt: skip
        assert rerun.status_code == 202, rerun.text
        evaluations["rerun"] = rerun.json()["id"]

        def finished() -> bool:
            view = httpx.get(f"{url}/api/benchmarks/evaluations/{evaluations['rerun']}", headers=admin).json()
            return view["status"] in ("done", "failed")

        wait_for("the re-run by the server's workers", finished, 300, log)
        dev = httpx.get(f"{url}/api/benchmarks/{bench_id}/dev", headers=vendor, timeout=30).json()
        yield World(url, env, log, cases, bench_id, admin, vendor, patient, test_uids,
                    {c["study_uid"] for c in dev["cases"]}, evaluations, outputs, share.json()["url"])  # fmt: skip


# --- the benchmark ------------------------------------------------------------------------------


def test_the_cli_builds_the_benchmark_and_refuses_bad_labels_whole(world: World) -> None:
    out = world.outputs
    assert out["create"].returncode == 0 and "main metric froc_mean_sensitivity" in out["create"].stdout
    assert out["add"].returncode == 0 and "added 60 studies" in out["add"].stdout
    bad = out["bad labels"]
    assert bad.returncode == 1
    message = " ".join(bad.stderr.split())
    assert "line 5: study 1.2.3.4.5 is not in this benchmark" in message
    assert "line 6: lesion 1 radius_mm must be a number, not 'big'" in message
    assert out["labels"].returncode == 0 and "version 2: 60 of 60 studies labelled" in out["labels"].stdout
    assert out["split"].returncode == 0 and "version 3: 30 dev, 30 test (seed 11); 30 dev studies published" in \
        out["split"].stdout
    assert "evaluating lesion-detector@1.0.0" in out["detector"].stderr  # the progress bar
    assert "froc_mean_sensitivity = " in out["detector"].stdout and "0 failed of 30" in out["detector"].stdout
    versions = httpx.get(f"{world.url}/api/benchmarks/lesions", headers=world.vendor).json()["versions"]
    assert [v["number"] for v in versions] == [1, 2, 3] and versions[-1]["n_test"] == 30


def test_the_leaderboard_ranks_the_detector_first_with_non_overlapping_intervals(world: World) -> None:
    board = httpx.get(f"{world.url}/api/benchmarks/{world.bench_id}/leaderboard", headers=world.vendor).json()
    assert board["metric"] == "froc_mean_sensitivity" and board["dataset_version"] == 3
    first, second = board["rows"]
    assert (first["plugin"], second["plugin"]) == ("lesion-detector@1.0.0", "test-random@1.0")
    assert first["ci_low"] > second["ci_high"], board
    assert first["n_cases"] == second["n_cases"] == 30 and first["n_failed"] == 0
    shown = cli(world.env, "benchmark", "leaderboard", "lesions", "--json")
    assert json.loads(shown.stdout)["rows"][0]["plugin"] == "lesion-detector@1.0.0"
    page = httpx.get(f"{world.url}/viewer/benchmarks/{world.bench_id}", headers=world.vendor)
    assert page.status_code == 200 and page.text.index("lesion-detector@1.0.0") < page.text.index("test-random@1.0")
    for row in board["rows"]:
        report = httpx.get(f"{world.url}/api/benchmarks/evaluations/{row['evaluation_id']}/report.json",
                           headers=world.vendor).json()["metrics"]  # fmt: skip
        froc = {k: v["value"] for k, v in report["froc"]["sensitivity_at_fp_per_scan"].items()}
        print(f"\n{row['plugin']}: {row['metric']} {row['value']} [{row['ci_low']}, {row['ci_high']}]; FROC {froc}; "
              f"study AUC {report['study_level']['metrics']['auc']}")


def test_running_an_evaluation_again_gives_identical_numbers(world: World) -> None:
    reports = [httpx.get(f"{world.url}/api/benchmarks/evaluations/{world.evaluations[k]}/report.json",
                         headers=world.admin).json() for k in ("detector", "rerun")]  # fmt: skip
    first, again = reports
    assert first["evaluation"]["id"] != again["evaluation"]["id"]
    assert first["metrics"] == again["metrics"] and first["main_metric"] == again["main_metric"]
    for pinned in ("benchmark", "plugin", "cloudfilm_version", "bootstrap_seed", "threshold"):
        assert first[pinned] == again[pinned]


def test_the_metrics_agree_with_scikit_learn_on_the_same_inputs(world: World) -> None:
    evaluation = world.evaluations["detector"]
    cases = httpx.get(f"{world.url}/api/benchmarks/evaluations/{evaluation}/cases", headers=world.admin).json()
    report = httpx.get(f"{world.url}/api/benchmarks/evaluations/{evaluation}/report.json", headers=world.admin).json()
    y = np.array([bool(c["label"]["lesions"]) for c in cases])
    s = np.array([c["output"]["score"] for c in cases])
    level = report["metrics"]["study_level"]
    assert level["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    tn, fp, fn, tp = confusion_matrix(y, s >= 0.5, labels=[False, True]).ravel()
    got = {k: v["value"] for k, v in level["metrics"].items()}
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn), abs=1e-6)
    assert got["specificity"] == pytest.approx(tn / (tn + fp), abs=1e-6)
    assert got["ppv"] == pytest.approx(tp / (tp + fp), abs=1e-6)
    assert got["npv"] == pytest.approx(tn / (tn + fn), abs=1e-6)
    assert got["f1"] == pytest.approx(f1_score(y, s >= 0.5), abs=1e-6)
    truth = {c.study_uid: c.lesion for c in world.test_cases}
    hits = sum(1 for c in cases if c["label"]["lesions"] and any(
        np.linalg.norm(np.array(p[:3]) - np.array(truth[c["study_uid"]].center_mm)) <= truth[c["study_uid"]].radius_mm
        for p in c["output"]["points"]))  # fmt: skip
    assert report["metrics"]["froc"]["sensitivity_at_fp_per_scan"]["4"]["value"] <= hits / y.sum() + 1e-9
    print("\ndetector:", json.dumps(report["main_metric"]), "study AUC", level["metrics"]["auc"])


def test_evaluations_are_rate_limited_and_vendors_evaluate_only_their_own(world: World) -> None:
    path = f"{world.url}/api/benchmarks/{world.bench_id}/evaluations"
    again = httpx.post(path, json={"plugin": "test-random"}, headers=world.admin)
    assert again.status_code == 202
    assert httpx.post(path, json={"plugin": "test-random"}, headers=world.admin).status_code == 202
    limited = httpx.post(path, json={"plugin": "test-random"}, headers=world.admin)
    assert limited.status_code == 429 and "in the last 24 hours (at most 3)" in limited.text
    assert httpx.post(path, json={"plugin": "lesion-detector"}, headers=world.vendor).status_code == 403
    assert httpx.post(path, json={"plugin": "test-random"}, headers=world.patient).status_code == 403


# --- the hidden-label matrix ------------------------------------------------------------------------


def forbidden(world: World) -> list[str]:
    """Strings that give away the test split: its UIDs, any patient's name or ID, its labels."""
    out: set[str] = set()
    for case in world.test_cases:
        out.add(case.study_uid)
        for ds in case.datasets:
            out.update({str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)})
        if case.lesion:
            x, y, z = case.lesion.center_mm
            out.update({f"{x}, {y}, {z}", f"{x},{y},{z}"})
    for p in PATIENTS:
        alphabetic = p.name.split("=")[0]
        out.update({alphabetic, alphabetic.replace("^", " "), json.dumps(alphabetic)[1:-1], p.patient_id})
    return sorted(out)


def _first_test(world: World) -> tuple[str, str, str]:
    case = sorted(world.test_cases, key=lambda c: c.study_uid)[0]
    ds = case.datasets[len(case.datasets) // 2]
    return case.study_uid, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _routes() -> dict[str, Callable[[World], str]]:
    def study(suffix: str) -> Callable[[World], str]:
        return lambda w: f"/dicomweb/studies/{_first_test(w)[0]}{suffix}"

    def series(suffix: str) -> Callable[[World], str]:
        return lambda w: "/dicomweb/studies/{}/series/{}{}".format(*_first_test(w)[:2], suffix)

    def instance(suffix: str) -> Callable[[World], str]:
        return lambda w: "/dicomweb/studies/{}/series/{}/instances/{}{}".format(*_first_test(w), suffix)

    def evaluation(key: str, suffix: str = "") -> Callable[[World], str]:
        return lambda w: f"/api/benchmarks/evaluations/{w.evaluations[key]}{suffix}"

    return {
        "qido studies": lambda w: "/dicomweb/studies",
        "qido studies by name": lambda w: "/dicomweb/studies?PatientName=*&includefield=all",
        "qido studies by uid": lambda w: f"/dicomweb/studies?StudyInstanceUID={_first_test(w)[0]}",
        "qido series": lambda w: "/dicomweb/series?includefield=all",
        "qido instances": lambda w: "/dicomweb/instances?limit=1000",
        "qido study series": study("/series"),
        "qido study instances": study("/instances"),
        "qido series instances": series("/instances"),
        "wado study": study(""),
        "wado series": series(""),
        "wado instance": instance(""),
        "wado frame": instance("/frames/1"),
        "metadata study": study("/metadata"),
        "metadata series": series("/metadata"),
        "metadata instance": instance("/metadata"),
        "rendered study": study("/rendered"),
        "rendered instance": instance("/rendered"),
        "rendered frame": instance("/frames/1/rendered"),
        "thumbnail study": study("/thumbnail"),
        "thumbnail series": series("/thumbnail"),
        "wado-uri": lambda w: "/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}&contentType="
                              "application%2Fdicom".format(*_first_test(w)),
        "api benchmarks": lambda w: "/api/benchmarks",
        "api benchmark": lambda w: f"/api/benchmarks/{w.bench_id}",
        "api dev split": lambda w: f"/api/benchmarks/{w.bench_id}/dev",
        "api cases": lambda w: f"/api/benchmarks/{w.bench_id}/cases",
        "api leaderboard": lambda w: f"/api/benchmarks/{w.bench_id}/leaderboard",
        "api evaluations": lambda w: f"/api/benchmarks/{w.bench_id}/evaluations",
        "api evaluation": evaluation("detector"),
        "api report": evaluation("detector", "/report.json"),
        "api report random": evaluation("random", "/report.json"),
        "api curves": evaluation("detector", "/curves.png"),
        "api per-case outputs": evaluation("detector", "/cases"),
        "api jobs": lambda w: "/api/jobs?limit=1000",
        "api jobs of a test study": lambda w: f"/api/jobs?study={_first_test(w)[0]}",
        "api audit": lambda w: "/api/audit?limit=10000",
        "api plugins": lambda w: "/api/plugins",
        "api me": lambda w: "/api/auth/me",
        "api film": lambda w: f"/api/studies/{_first_test(w)[0]}/film.png",
        "api zip": lambda w: f"/api/studies/{_first_test(w)[0]}/archive.zip",
        "api findings": lambda w: f"/api/studies/{_first_test(w)[0]}/findings",
        "api shares": lambda w: f"/api/studies/{_first_test(w)[0]}/shares",
        "page landing": lambda w: "/viewer/",
        "page worklist": lambda w: "/viewer/worklist?name=*",
        "page study": lambda w: f"/viewer/studies/{_first_test(w)[0]}",
        "page benchmarks": lambda w: "/viewer/benchmarks",
        "page leaderboard": lambda w: f"/viewer/benchmarks/{w.bench_id}",
        "page report": lambda w: f"/viewer/benchmarks/evaluations/{w.evaluations['detector']}",
        "share link": lambda w: w.share_url.removeprefix(w.url),
    }


ROUTES = _routes()
#: Routes whose admin answer shows test-split data: proof that the vendor's empty answer means something.
ADMIN_SEES_TEST = {"qido studies", "qido study series", "wado instance", "metadata study", "wado-uri", "api cases",
                   "api per-case outputs", "page study", "share link"}


def _text(response: httpx.Response) -> str:
    head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    return head + "\n" + response.content.decode("latin-1")


def _leaks(world: World, response: httpx.Response) -> list[str]:
    body = _text(response)
    utf8 = response.content.decode("utf-8", errors="replace")
    return [s for s in forbidden(world) if s in body or s in utf8]


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_vendor_finds_nothing_of_the_test_split(world: World, route: str) -> None:
    path = ROUTES[route](world)
    with httpx.Client(base_url=world.url, timeout=60, headers={"Accept": "*/*"}) as client:
        answer = client.get(path, headers=world.vendor)
        assert answer.status_code in (200, 204, 403, 404), (route, answer.status_code, answer.text[:300])
        assert _leaks(world, answer) == [], route
        anonymous = client.get(path)  # no credentials at all (share links are opened this way)
        assert _leaks(world, anonymous) == [], route
        if route in ADMIN_SEES_TEST:
            assert _leaks(world, client.get(path, headers=world.admin)), f"{route}: the probe would see nothing"
    if route == "qido studies":
        listed = {s["0020000D"]["Value"][0] for s in answer.json()}
        assert listed == world.dev_uids and len(listed) == 30  # the de-identified dev split, nothing else
    if route == "share link":
        assert answer.status_code == 404 and "Study not available" in answer.text


def test_the_dev_split_is_served_de_identified(world: World) -> None:
    copy = sorted(world.dev_uids)[0]
    meta = httpx.get(f"{world.url}/dicomweb/studies/{copy}/metadata", headers=world.vendor, timeout=30).json()
    first = meta[0]
    assert first["00120062"]["Value"] == ["YES"] and "Basic Profile" in first["00120063"]["Value"][0]
    assert first["00100020"]["Value"][0].startswith("CFANON-") and first["0020000D"]["Value"] == [copy]
    assert not any(int(tag[:4], 16) % 2 for tag in first)  # no private attributes
    originals = {c.study_uid for c in world.cases}
    assert not {m["0020000E"]["Value"][0] for m in meta} & {str(ds.SeriesInstanceUID) for c in world.cases
                                                            for ds in c.datasets[:1]}  # fmt: skip
    assert copy not in originals
    frames = {m["00200052"]["Value"][0] for m in meta}
    assert len(frames) == 1  # one frame of reference, remapped consistently across the study


def test_a_patient_never_sees_own_test_studies(world: World) -> None:
    mine = {c.study_uid for c in world.cases if c.patient.patient_id == PATIENTS[0].patient_id}
    listed = {s["0020000D"]["Value"][0] for s in httpx.get(f"{world.url}/dicomweb/studies",
                                                           headers=world.patient).json()}  # fmt: skip
    assert listed == mine - world.test_uids and mine & world.test_uids
    for path in ("/viewer/home", "/api/audit?limit=10000", f"/dicomweb/studies/{sorted(mine & world.test_uids)[0]}"):
        answer = httpx.get(world.url + path, headers=world.patient)
        assert not {u for u in world.test_uids if u in answer.text}, path
    assert httpx.get(f"{world.url}/api/benchmarks", headers=world.patient).status_code == 403


def test_a_vendor_hosted_endpoint_receives_no_test_case(world: World) -> None:
    """The matrix's hosted-endpoint row: the vendor registers a hosted plugin (a recording HTTP
    server) and the hospital enables it; its evaluation on the test split is refused by the API
    and the CLI with one sentence, and the endpoint is never called."""
    from http.server import ThreadingHTTPServer
    from threading import Thread

    from tests.ai_plugins.benchmarks.test_remote import Recorder

    Recorder.requests = []
    endpoint = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    Thread(target=endpoint.serve_forever, daemon=True).start()
    try:
        manifest = {"name": "acme-hosted", "version": "1.0", "vendor": "Acme", "input_filter": {"modalities": ["CT"]},
                    "endpoint_url": f"http://127.0.0.1:{endpoint.server_address[1]}/jobs"}  # fmt: skip
        assert httpx.post(f"{world.url}/api/plugins", json=manifest, headers=world.vendor).status_code == 201
        enabled = httpx.patch(f"{world.url}/api/plugins/acme-hosted/1.0", json={"enabled": True}, headers=world.admin)
        assert enabled.status_code == 200
        for who in (world.vendor, world.admin):
            refused = httpx.post(f"{world.url}/api/benchmarks/{world.bench_id}/evaluations",
                                 json={"plugin": "acme-hosted"}, headers=who)  # fmt: skip
            assert refused.status_code == 409 and "hidden test cases never leave the archive" in refused.text
        cli_refused = cli(world.env, "benchmark", "evaluate", "lesions", "acme-hosted")
        assert cli_refused.returncode == 1 and "hidden test cases never leave" in " ".join(cli_refused.stderr.split())
        case = sorted(world.test_uids)[0]
        rerun = httpx.post(f"{world.url}/api/studies/{case}/plugins/acme-hosted/run", headers=world.admin)
        assert rerun.status_code == 409
    finally:
        endpoint.shutdown()
    assert Recorder.requests == []
