"""Benchmark metrics: agreement with scikit-learn, bootstrap intervals, FROC, Dice and HD95."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from ai_plugins.benchmarks import metrics as m

THRESHOLD = 0.5


def _data(seed: int, n: int, *, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.4
    y[:2] = [True, False]  # both classes always present
    s = np.clip(rng.normal(0.5 + 0.2 * y, 0.25), 0, 1)
    return y, (np.round(s, 1) if ties else s)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_operating_point_agree_with_scikit_learn(seed: int, ties: bool) -> None:
    y, s = _data(seed, 37 + 11 * seed, ties=ties)
    assert m.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    called = s >= THRESHOLD
    tn, fp, fn, tp = confusion_matrix(y, called, labels=[False, True]).ravel()
    c = m.confusion(y, s, THRESHOLD)
    assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)
    got = m.operating_metrics(c)
    assert got["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert got["specificity"] == pytest.approx(tn / (tn + fp))
    assert got["ppv"] == pytest.approx(tp / (tp + fp))
    assert got["npv"] == pytest.approx(tn / (tn + fn))
    assert got["accuracy"] == pytest.approx(accuracy_score(y, called))
    assert got["f1"] == pytest.approx(f1_score(y, called))
    result = m.classification(list(y), list(s), THRESHOLD, n_boot=300, seed=5)
    assert result.metrics["auc"].value == pytest.approx(roc_auc_score(y, s))
    assert result.metrics["f1"].value == pytest.approx(f1_score(y, called))


def test_undefined_values_are_none_never_a_guess() -> None:
    assert m.auc([True, True], [0.2, 0.9]) is None
    c = m.confusion([True, False], [0.1, 0.2], THRESHOLD)  # nothing called positive
    assert m.operating_metrics(c)["ppv"] is None
    result = m.classification([True, True, True], [0.1, 0.7, 0.9], THRESHOLD, n_boot=100, seed=1)
    assert result.metrics["auc"].value is None and result.metrics["specificity"].value is None
    assert result.metrics["sensitivity"].value == pytest.approx(2 / 3)


def test_bootstrap_is_stratified_seeded_and_brackets_the_estimate() -> None:
    y, s = _data(3, 60, ties=False)
    rows = m.stratified_resamples(list(y), 200, seed=9)
    assert rows.shape == (200, y.size)
    assert (y[rows].sum(axis=1) == y.sum()).all()  # every resample keeps the class sizes
    a = m.classification(list(y), list(s), THRESHOLD, n_boot=500, seed=9)
    b = m.classification(list(y), list(s), THRESHOLD, n_boot=500, seed=9)
    c = m.classification(list(y), list(s), THRESHOLD, n_boot=500, seed=10)
    assert a.to_json() == b.to_json()
    assert a.metrics["auc"] != c.metrics["auc"]
    auc = a.metrics["auc"]
    assert auc.low is not None and auc.high is not None
    assert auc.low < auc.value < auc.high and auc.high - auc.low < 0.5


def test_subgroups_report_metrics_only_where_numbers_allow() -> None:
    y, s = _data(4, 80, ties=False)
    sex = ["F" if i % 2 else "M" for i in range(80)]
    band = ["80+" if i < 6 else "40-59" for i in range(80)]
    result = m.classification(list(y), list(s), THRESHOLD, n_boot=100, seed=2,
                              subgroups={"sex": sex, "age_band": band})  # fmt: skip
    women = result.subgroups["sex"]["F"]
    mask = np.array(sex) == "F"
    assert women["n"] == 40 and women["auc"]["value"] == pytest.approx(roc_auc_score(y[mask], s[mask]), abs=1e-6)
    assert "auc" not in result.subgroups["age_band"]["80+"] and "note" in result.subgroups["age_band"]["80+"]


def test_froc_counts_hits_within_the_radius_and_false_positives_per_scan() -> None:
    lesion = m.Lesion((0.0, 0.0, 0.0), 10.0)
    cases = [
        # a hit (9 mm from the centre) and a near miss (11 mm): one TP, one FP
        m.DetectionCase((lesion,), ((9.0, 0.0, 0.0, 0.9), (0.0, 11.0, 0.0, 0.8))),
        # two points on one lesion count once; the other lesion is missed
        m.DetectionCase((lesion, m.Lesion((50.0, 0.0, 0.0), 5.0)), ((1.0, 0, 0, 0.7), (2.0, 0, 0, 0.6))),
        # a normal scan with two false positives
        m.DetectionCase((), ((0.0, 0.0, 0.0, 0.95), (5.0, 5.0, 5.0, 0.3))),
        m.DetectionCase((), ()),
    ]
    result = m.froc(cases, n_boot=200, seed=1)
    assert result.n_lesions == 3 and result.n_scans == 4
    # thresholds: 0.95 (1 FP) 0.9 (1 TP) 0.8 (2 FP) 0.7 (2 TP) 0.6 (2 TP) 0.3 (3 FP)
    at = {r: e.value for r, e in result.sensitivity_at.items()}
    assert at == {0.5: pytest.approx(2 / 3), 1.0: pytest.approx(2 / 3), 2.0: pytest.approx(2 / 3),
                  4.0: pytest.approx(2 / 3)}  # fmt: skip
    tight = m.froc(cases[:1] + cases[3:], n_boot=50, seed=1)  # 2 scans: FP/scan 0 at 0.9, 0.5 at 0.8
    assert tight.sensitivity_at[0.5].value == 1.0
    assert result.mean_sensitivity.value == pytest.approx(2 / 3)
    assert result.curve[0] == (0.0, 0.0) and result.curve[-1] == pytest.approx((0.75, 2 / 3))


def test_froc_without_lesions_is_undefined() -> None:
    result = m.froc([m.DetectionCase((), ((0, 0, 0, 0.5),))], n_boot=10, seed=1)
    assert result.mean_sensitivity.value is None


def _sphere(shape: tuple[int, int, int], center: tuple[float, float, float], radius: float) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    return np.asarray((zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2 <= radius**2)


def test_dice_and_hd95() -> None:
    a = _sphere((20, 40, 40), (10, 20, 20), 6)
    assert m.dice(a, a) == 1.0 and m.hd95(a, a, (1.0, 1.0, 1.0)) == 0.0
    b = np.roll(a, 3, axis=2)  # shifted 3 voxels along x
    d = m.dice(a, b)
    assert d == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert m.hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(3.0, abs=0.6)
    assert m.hd95(a, b, (2.0, 1.0, 0.5)) == pytest.approx(1.5, abs=0.4)  # anisotropic: x voxels are 0.5 mm
    empty = np.zeros_like(a)
    assert m.dice(empty, empty) == 1.0 and m.hd95(empty, empty, (1, 1, 1)) == 0.0
    assert m.dice(a, empty) == 0.0 and m.hd95(a, empty, (1, 1, 1)) is None
    result = m.segmentation([1.0, d, 0.0], [0.0, 3.0, None], [50.0, 50.0, 50.0], n_boot=200, seed=3)
    assert result.dice.value == pytest.approx((1 + d) / 3)
    assert result.hd95.value == pytest.approx(53 / 3) and result.n_hd95_penalised == 1
    assert result.dice.low is not None and result.dice.low <= result.dice.value <= (result.dice.high or math.inf)


def test_the_metrics_module_does_not_use_scikit_learn() -> None:
    source = Path(m.__file__).read_text()
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Import)}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert "sklearn" not in imported and imported >= {"numpy", "scipy"}
