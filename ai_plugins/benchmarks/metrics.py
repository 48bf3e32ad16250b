"""Benchmark metrics with numpy and scipy: AUC-ROC (Mann-Whitney U), operating-point metrics,
stratified seeded bootstrap confidence intervals, FROC, Dice and HD95.

Everything here is a pure function of its inputs and a seed, so the same predictions on the same
dataset version always give the same numbers. Undefined values (a PPV with no positive calls, an
AUC with one class) are ``None``, never a guess. The formulas agree with scikit-learn's
``roc_auc_score``, ``confusion_matrix`` and ``f1_score`` (tested), without importing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.stats import norm, rankdata

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FROC_RATES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
MIN_SUBGROUP = 5  # positives (and negatives) a subgroup needs before its metrics are reported
ALPHA = 0.05


@dataclass(frozen=True, slots=True)
class Estimate:
    """A metric with its 95 % bootstrap interval (``None`` where undefined)."""

    value: float | None
    low: float | None = None
    high: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {"value": _round(self.value), "ci_low": _round(self.low), "ci_high": _round(self.high)}


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


# --- classification ----------------------------------------------------------------------------


def auc(y: Sequence[bool] | BoolArray, scores: Sequence[float] | FloatArray) -> float | None:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half)."""
    truth = np.asarray(y, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _auc_rows(pos: FloatArray, neg: FloatArray) -> FloatArray:
    """AUC of each row pair (bootstrap resamples): positives' and negatives' scores."""
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    return np.asarray((ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg), dtype=float)


def roc_curve(y: Sequence[bool] | BoolArray, scores: Sequence[float] | FloatArray) -> list[tuple[float, float]]:
    """The ROC curve's vertices ``(false positive rate, true positive rate)`` from (0, 0) to (1, 1)."""
    truth = np.asarray(y, dtype=bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    points = [(0.0, 0.0)]
    for t in np.unique(s)[::-1]:
        called = s >= t
        tpr = float((called & truth).sum() / n_pos) if n_pos else 0.0
        fpr = float((called & ~truth).sum() / n_neg) if n_neg else 0.0
        points.append((fpr, tpr))
    if points[-1] != (1.0, 1.0):
        points.append((1.0, 1.0))
    return points


@dataclass(frozen=True, slots=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def confusion(y: Sequence[bool] | BoolArray, scores: Sequence[float] | FloatArray, threshold: float) -> Confusion:
    """Counts at ``threshold``: a case is called positive when its score is at or above it."""
    truth = np.asarray(y, dtype=bool)
    called = np.asarray(scores, dtype=float) >= threshold
    return Confusion(int((called & truth).sum()), int((called & ~truth).sum()), int((~called & ~truth).sum()),
                     int((~called & truth).sum()))  # fmt: skip


def operating_metrics(c: Confusion) -> dict[str, float | None]:
    """Sensitivity, specificity, PPV, NPV, accuracy and F1 from one confusion matrix."""
    n = c.tp + c.fp + c.tn + c.fn
    return {
        "sensitivity": _ratio(c.tp, c.tp + c.fn),
        "specificity": _ratio(c.tn, c.tn + c.fp),
        "ppv": _ratio(c.tp, c.tp + c.fp),
        "npv": _ratio(c.tn, c.tn + c.fn),
        "accuracy": _ratio(c.tp + c.tn, n),
        "f1": _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn),
    }


def wilson_interval(successes: int, n: int, *, alpha: float = ALPHA) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion (Wilson 1927; Agresti & Coull 1998): well inside [0, 1] and
    sensible for small ``n`` and proportions near 0 or 1, where the normal approximation is not."""
    if n <= 0:
        return None, None
    z = float(norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class Proportion:
    """A positive predictive value as counts (``hits`` of ``called``) with its 95 % Wilson interval."""

    level: str  # "finding": called findings that lie in a true lesion; "study": positive studies called
    hits: int
    called: int

    def to_json(self) -> dict[str, object]:
        low, high = wilson_interval(self.hits, self.called)
        value = self.hits / self.called if self.called else None
        return {"level": self.level, "hits": self.hits, "called": self.called, "method": "wilson",
                "value": _round(value), "ci_low": _round(low), "ci_high": _round(high)}  # fmt: skip


def finding_ppv(cases: Sequence[DetectionCase], threshold: float) -> Proportion:
    """Of the findings at or above ``threshold``, how many lie within a true lesion's radius."""
    hits = called = 0
    for case in cases:
        for x, y, z, p in case.points:
            if p < threshold:
                continue
            called += 1
            hits += any(math.dist((x, y, z), les.center) <= les.radius for les in case.lesions)
    return Proportion("finding", hits, called)


def stratified_resamples(strata: Sequence[object], n_boot: int, seed: int) -> npt.NDArray[np.intp]:
    """``n_boot`` rows of case indices, each stratum resampled with replacement to its own size."""
    rng = np.random.default_rng(seed)
    keys = sorted({str(s) for s in strata})
    groups = [np.flatnonzero(np.asarray([str(s) == k for s in strata])) for k in keys]
    parts = [g[rng.integers(0, g.size, size=(n_boot, g.size))] for g in groups if g.size]
    if not parts:
        return np.zeros((n_boot, 0), dtype=np.intp)
    return np.concatenate(parts, axis=1)


def percentile_interval(values: Sequence[float | None] | FloatArray) -> tuple[float | None, float | None]:
    """The 2.5th and 97.5th percentiles of the defined bootstrap values."""
    arr = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return None, None
    low, high = np.percentile(arr, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(low), float(high)


@dataclass(frozen=True)
class ClassificationResult:
    n: int
    n_positive: int
    n_negative: int
    threshold: float
    confusion: Confusion
    metrics: dict[str, Estimate]
    roc: list[tuple[float, float]]
    subgroups: dict[str, dict[str, dict[str, object]]] = field(default_factory=dict)

    def to_json(self, *, curves: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "n": self.n, "n_positive": self.n_positive, "n_negative": self.n_negative, "threshold": self.threshold,
            "confusion": {"tp": self.confusion.tp, "fp": self.confusion.fp, "tn": self.confusion.tn,
                          "fn": self.confusion.fn},
            "metrics": {k: v.to_json() for k, v in self.metrics.items()},
            "subgroups": self.subgroups,
        }  # fmt: skip
        if curves:
            out["curve"] = [[round(a, 6), round(b, 6)] for a, b in self.roc]  # ROC: (1 - specificity, sensitivity)
        return out


def classification(y: Sequence[bool], scores: Sequence[float], threshold: float, *, n_boot: int, seed: int,
                   subgroups: Mapping[str, Sequence[str]] | None = None) -> ClassificationResult:  # fmt: skip
    """AUC and the operating-point metrics with stratified (by label) seeded bootstrap intervals."""
    truth = np.asarray(y, dtype=bool)
    s = np.asarray(scores, dtype=float)
    c = confusion(truth, s, threshold)
    point = operating_metrics(c)
    rows = stratified_resamples(list(truth), n_boot, seed)
    estimates: dict[str, Estimate] = {}
    value = auc(truth, s)
    if value is not None:
        rt, rs = truth[rows], s[rows]
        n_pos = int(truth.sum())
        order = np.argsort(~rt, axis=1, kind="stable")  # positives first within each resample
        ordered = np.take_along_axis(rs, order, axis=1)
        estimates["auc"] = Estimate(value, *percentile_interval(_auc_rows(ordered[:, :n_pos], ordered[:, n_pos:])))
    else:
        estimates["auc"] = Estimate(None)
    if rows.shape[1]:
        rt, called = truth[rows], s[rows] >= threshold
        tp, fp = (called & rt).sum(1), (called & ~rt).sum(1)
        tn, fn = (~called & ~rt).sum(1), (~called & rt).sum(1)
        boot = {
            "sensitivity": _safe_div(tp, tp + fn), "specificity": _safe_div(tn, tn + fp),
            "ppv": _safe_div(tp, tp + fp), "npv": _safe_div(tn, tn + fn),
            "accuracy": _safe_div(tp + tn, tp + tn + fp + fn), "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        }  # fmt: skip
        for name, v in point.items():
            estimates[name] = Estimate(v, *percentile_interval(boot[name])) if v is not None else Estimate(None)
    result = ClassificationResult(truth.size, int(truth.sum()), int((~truth).sum()), threshold, c, estimates,
                                  roc_curve(truth, s) if value is not None else [])  # fmt: skip
    if subgroups:
        result.subgroups.update(_subgroups(truth, s, threshold, subgroups, n_boot=n_boot, seed=seed))
    return result


def _safe_div(num: npt.NDArray[np.int64], den: npt.NDArray[np.int64]) -> FloatArray:
    out = np.full(num.shape, np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def _subgroups(truth: BoolArray, s: FloatArray, threshold: float, groups: Mapping[str, Sequence[str]], *, n_boot: int,
               seed: int) -> dict[str, dict[str, dict[str, object]]]:  # fmt: skip
    """Per attribute and value: counts, and AUC/sensitivity/specificity where numbers allow."""
    out: dict[str, dict[str, dict[str, object]]] = {}
    for attribute, values in groups.items():
        col = np.asarray([v or "unknown" for v in values])
        out[attribute] = {}
        for value in sorted(set(col.tolist())):
            mask = col == value
            t, sc = truth[mask], s[mask]
            n_pos, n_neg = int(t.sum()), int((~t).sum())
            entry: dict[str, object] = {"n": int(mask.sum()), "n_positive": n_pos, "n_negative": n_neg}
            if n_pos >= MIN_SUBGROUP and n_neg >= MIN_SUBGROUP:
                sub = classification(list(t), list(sc), threshold, n_boot=n_boot, seed=seed)
                entry["auc"] = sub.metrics["auc"].to_json()
            if n_pos >= MIN_SUBGROUP or n_neg >= MIN_SUBGROUP:
                c = confusion(t, sc, threshold)
                m = operating_metrics(c)
                if n_pos >= MIN_SUBGROUP:
                    entry["sensitivity"] = _round(m["sensitivity"])
                if n_neg >= MIN_SUBGROUP:
                    entry["specificity"] = _round(m["specificity"])
            if len(entry) == 3:
                entry["note"] = f"fewer than {MIN_SUBGROUP} positives and negatives: no metrics"
            out[attribute][value] = entry
    return out


# --- detection (FROC) --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lesion:
    center: tuple[float, float, float]
    radius: float


@dataclass(frozen=True, slots=True)
class DetectionCase:
    """Ground-truth lesions and predicted points (patient millimetres) with scores, for one scan."""

    lesions: tuple[Lesion, ...]
    points: tuple[tuple[float, float, float, float], ...]  # x, y, z, score


@dataclass(frozen=True, slots=True)
class _Scored:
    lesion_scores: FloatArray  # per lesion: best score of a hit, -inf when missed
    fp_scores: FloatArray


def _score_case(case: DetectionCase) -> _Scored:
    """A point is a hit when it lies within a lesion's radius (the nearest such lesion takes it)."""
    best = np.full(len(case.lesions), -np.inf)
    fps: list[float] = []
    centers = np.asarray([lz.center for lz in case.lesions], dtype=float).reshape(-1, 3)
    radii = np.asarray([lz.radius for lz in case.lesions], dtype=float)
    for x, y, z, score in case.points:
        if centers.size:
            d = np.linalg.norm(centers - np.asarray([x, y, z]), axis=1)
            inside = d <= radii
            if inside.any():
                k = int(np.flatnonzero(inside)[np.argmin(d[inside])])
                best[k] = max(best[k], score)
                continue
        fps.append(score)
    return _Scored(best, np.asarray(fps, dtype=float))


def _froc_points(lesion_scores: FloatArray, fp_scores: FloatArray, n_scans: int) -> tuple[FloatArray, FloatArray]:
    """(false positives per scan, sensitivity) at every distinct score threshold, loosest last."""
    found = lesion_scores[np.isfinite(lesion_scores)]
    thresholds = np.unique(np.concatenate([found, fp_scores]))[::-1]
    ls, fs = np.sort(found), np.sort(fp_scores)
    hits = ls.size - np.searchsorted(ls, thresholds, side="left")
    fps = fs.size - np.searchsorted(fs, thresholds, side="left")
    n_lesions = max(lesion_scores.size, 1)
    return fps / max(n_scans, 1), hits / n_lesions


def _sens_at(fps: FloatArray, sens: FloatArray, rates: Sequence[float]) -> list[float]:
    return [float(sens[fps <= r].max()) if (fps <= r).any() else 0.0 for r in rates]


@dataclass(frozen=True)
class FrocResult:
    n_scans: int
    n_lesions: int
    sensitivity_at: dict[float, Estimate]
    mean_sensitivity: Estimate
    curve: list[tuple[float, float]]

    def to_json(self, *, curves: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "n_scans": self.n_scans, "n_lesions": self.n_lesions,
            "sensitivity_at_fp_per_scan": {f"{r:g}": e.to_json() for r, e in self.sensitivity_at.items()},
            "mean_sensitivity": self.mean_sensitivity.to_json(),
        }  # fmt: skip
        if curves:
            out["curve"] = [[round(a, 6), round(b, 6)] for a, b in self.curve]  # (FP per scan, sensitivity)
        return out


def froc(cases: Sequence[DetectionCase], *, n_boot: int, seed: int, rates: Sequence[float] = FROC_RATES) -> FrocResult:
    """FROC: lesion sensitivity at ``rates`` false positives per scan, their mean, bootstrap intervals
    (resampling scans, stratified by whether a scan has lesions)."""
    scored = [_score_case(c) for c in cases]
    n_lesions = sum(s.lesion_scores.size for s in scored)

    def stats(idx: Sequence[int]) -> list[float] | None:
        ls = np.concatenate([scored[i].lesion_scores for i in idx]) if len(idx) else np.zeros(0)
        if ls.size == 0:
            return None
        fs = np.concatenate([scored[i].fp_scores for i in idx])
        fps, sens = _froc_points(ls, fs, len(idx))
        at = _sens_at(fps, sens, rates)
        return [*at, float(np.mean(at))]

    point = stats(range(len(scored)))
    fps, sens = (_froc_points(np.concatenate([s.lesion_scores for s in scored]),
                              np.concatenate([s.fp_scores for s in scored]), len(scored))
                 if scored and n_lesions else (np.zeros(0), np.zeros(0)))  # fmt: skip
    curve = [(0.0, 0.0), *zip(fps.tolist(), sens.tolist(), strict=True)]
    if point is None:
        return FrocResult(len(cases), 0, {r: Estimate(None) for r in rates}, Estimate(None), [])
    rows = stratified_resamples([s.lesion_scores.size > 0 for s in scored], n_boot, seed)
    boot = [stats(list(row)) for row in rows]
    columns = list(zip(*[b for b in boot if b is not None], strict=True)) or [() for _ in range(len(rates) + 1)]
    at = {r: Estimate(point[i], *percentile_interval(list(columns[i]))) for i, r in enumerate(rates)}
    mean = Estimate(point[-1], *percentile_interval(list(columns[-1])))
    return FrocResult(len(cases), n_lesions, at, mean, curve)


# --- segmentation ------------------------------------------------------------------------------


def dice(pred: BoolArray, truth: BoolArray) -> float:
    """2|A∩B| / (|A|+|B|); 1 when both masks are empty."""
    a, b = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else float(2.0 * (a & b).sum() / total)


def _surface(mask: BoolArray) -> BoolArray:
    return np.asarray(mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1)))


def hd95(pred: BoolArray, truth: BoolArray, spacing: Sequence[float]) -> float | None:
    """95th percentile of the surface distances both ways (mm, pooled as MedPy does); 0 when both
    masks are empty, ``None`` when only one is."""
    a, b = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return None
    sa, sb = _surface(a), _surface(b)
    to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return float(np.percentile(np.concatenate([to_b[sa], to_a[sb]]), 95))


@dataclass(frozen=True)
class SegmentationResult:
    n: int
    dice: Estimate
    hd95: Estimate
    median_dice: float | None
    n_hd95_penalised: int

    def to_json(self, *, curves: bool = True) -> dict[str, object]:
        return {"n": self.n, "metrics": {"dice": self.dice.to_json(), "hd95": self.hd95.to_json()},
                "median_dice": _round(self.median_dice), "n_hd95_penalised": self.n_hd95_penalised}  # fmt: skip


def segmentation(dices: Sequence[float], hd95s: Sequence[float | None], penalties: Sequence[float], *, n_boot: int,
                 seed: int, strata: Sequence[object] | None = None) -> SegmentationResult:  # fmt: skip
    """Mean Dice and mean HD95 over cases with bootstrap intervals. A case whose HD95 is undefined
    (one mask empty) counts with its penalty (the diagonal of its volume, in mm)."""
    d = np.asarray(dices, dtype=float)
    h = np.asarray([p if v is None else v for v, p in zip(hd95s, penalties, strict=True)], dtype=float)
    if d.size == 0:
        return SegmentationResult(0, Estimate(None), Estimate(None), None, 0)
    rows = stratified_resamples(list(strata) if strata is not None else [0] * d.size, n_boot, seed)
    mean: Callable[[FloatArray], float] = lambda x: float(np.mean(x))  # noqa: E731
    return SegmentationResult(
        n=int(d.size),
        dice=Estimate(mean(d), *percentile_interval(d[rows].mean(axis=1))),
        hd95=Estimate(mean(h), *percentile_interval(h[rows].mean(axis=1))),
        median_dice=float(np.median(d)),
        n_hd95_penalised=sum(1 for v in hd95s if v is None),
    )
