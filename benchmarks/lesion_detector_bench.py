"""Benchmark of the built-in ``lesion-detector`` plugin against the issue's targets; prints a table.

    .venv/bin/python benchmarks/lesion_detector_bench.py [--studies 100] [--faint 40] [--rows 128] [--slices 64]
                                                          [--big-runs 3]

* Accuracy set: ``--studies`` synthetic CT studies from ``tests/factories.py`` (seeds 0..N-1, even
  seeds carry one random spherical lesion of radius 4-8 % of the 350 mm field of view, odd seeds
  none), run end to end through ``LesionDetector().run(StudyInput)``. Study-level AUC from the
  "High density lesion" classification probability; a positive counts as localised when the
  most probable finding at the operating point (a positive call) lies within the true lesion
  radius of its centre; "best candidate localised" also counts the candidate the plugin shows
  below its operating point.
* Small and faint set: ``--faint`` studies (seeds 1000.., half with a lesion of radius 1.5-3 % of
  the FOV, 5-10 mm, and 70-110 HU over 40 HU soft tissue), the same measures.
* Calibration curve: the study-level probability against the observed fraction of studies with a
  lesion, in equal-width bins, over both sets; then the calibration's own held-out candidate
  reliability bins (written by ``train.py``). Sensitivity and specificity are at the calibrated
  operating point (``Calibration.operating_point``).
* Speed: one 200-slice 512x512 CT (seed 5, with a lesion), from Part 10 bytes to Findings
  (parse, decode, rescale, detect, masks), median of ``--big-runs`` runs on this machine's CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ai_plugins.builtin.lesion_detector import LesionDetector  # noqa: E402
from ai_plugins.sdk import Findings, Point3D, StudyInput, codes  # noqa: E402
from tests.factories import FOV_MM, Lesion, make_ct_case, to_bytes  # noqa: E402

TARGET_AUC = 0.95
TARGET_LOCALISED = 0.90
TARGET_SECONDS = 10.0
FAINT_SEED = 1000
FAINT_RADIUS = (0.015, 0.03)
FAINT_HU = (70.0, 110.0)
CURVE_BINS = 5


@dataclass
class Outcome:
    positive: bool
    probability: float
    localised: bool
    candidate_localised: bool
    distance_mm: float
    diameter_error: float
    seconds: float
    false_findings: int


def study_auc(scores: list[float], positive: list[bool]) -> float:
    """Mann-Whitney AUC (ties count half)."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def study_probability(findings: Findings) -> float:
    for c in findings.classifications:
        if c.code.value == codes.HIGH_DENSITY_LESION.value:
            return c.probability
    return 0.0


def faint_lesion(seed: int, rows: int, slices: int) -> Lesion | None:
    """A small faint lesion where the accuracy set would place one (even seeds), else none."""
    if seed % 2:
        return None
    rng = np.random.default_rng([seed, 77])
    placed = make_ct_case(lesion="random", seed=seed, rows=rows, cols=rows, n_slices=slices).lesion
    assert placed is not None
    return Lesion(placed.center_mm, round(float(rng.uniform(*FAINT_RADIUS)) * FOV_MM, 2),
                  round(float(rng.uniform(*FAINT_HU)), 1))  # fmt: skip


def _within(f_region: object, lesion: Lesion) -> tuple[bool, float]:
    if not isinstance(f_region, Point3D):
        return False, float("nan")
    distance = float(np.linalg.norm(np.asarray(f_region.as_tuple()) - np.asarray(lesion.center_mm)))
    return distance <= lesion.radius_mm, distance


def evaluate(plugin: LesionDetector, seed: int, rows: int, slices: int, *, faint: bool = False) -> Outcome:
    positive = seed % 2 == 0
    lesion: Lesion | str | None = faint_lesion(seed, rows, slices) if faint else ("random" if positive else None)
    case = make_ct_case(lesion=lesion, seed=seed, rows=rows, cols=rows, n_slices=slices)  # type: ignore[arg-type]
    started = time.perf_counter()
    findings = plugin.run(StudyInput.from_datasets(case.datasets))
    seconds = time.perf_counter() - started
    p = study_probability(findings)
    calls = [f for f in findings.findings if not f.below_operating_point]
    localised, candidate_localised, distance, diameter_error = False, False, float("nan"), float("nan")
    false_findings = sum(case.lesion is None or not _within(f.region, case.lesion)[0] for f in calls)
    if case.lesion is not None and findings.findings:
        best = max(findings.findings, key=lambda f: f.probability or 0.0)
        candidate_localised, _ = _within(best.region, case.lesion)
    if case.lesion is not None and calls:
        top = max(calls, key=lambda f: f.probability or 0.0)
        localised, distance = _within(top.region, case.lesion)
        diameter = top.measurement(codes.DIAMETER)
        if diameter is not None:
            diameter_error = diameter.value / (2 * case.lesion.radius_mm) - 1.0
    return Outcome(positive, p, localised, candidate_localised, distance, diameter_error, seconds, false_findings)


def calibration_curve(outcomes: list[Outcome], bins: int = CURVE_BINS) -> list[tuple[float, float, int, float, float]]:
    """(low, high, studies, mean predicted probability, observed fraction with a lesion) per bin."""
    p = np.asarray([o.probability for o in outcomes])
    y = np.asarray([o.positive for o in outcomes], dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return [(float(edges[b]), float(edges[b + 1]), int((which == b).sum()), float(p[which == b].mean()),
             float(y[which == b].mean())) for b in range(bins) if (which == b).any()]  # fmt: skip


def time_big(plugin: LesionDetector, runs: int) -> tuple[list[float], list[float], Findings]:
    case = make_ct_case(lesion="random", seed=5, rows=512, cols=512, n_slices=200)
    blobs = [to_bytes(ds) for ds in case.datasets]
    del case
    totals, loads = [], []
    findings = Findings()
    for _ in range(runs):
        started = time.perf_counter()
        study = StudyInput.from_part10(blobs)
        _ = study.series[0].volume
        loaded = time.perf_counter()
        findings = plugin.run(study)
        totals.append(time.perf_counter() - started)
        loads.append(loaded - started)
    return totals, loads, findings


def row(name: str, value: str, target: str = "", ok: bool | None = None) -> str:
    verdict = "" if ok is None else ("PASS" if ok else "FAIL")
    return f"| {name:<46} | {value:>16} | {target:>10} | {verdict:>4} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--faint", type=int, default=40, help="studies of the small faint set (half with a lesion)")
    parser.add_argument("--rows", type=int, default=128, help="matrix (rows = columns) of the accuracy set")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--big-runs", type=int, default=3, help="timed runs of the 200x512x512 CT (0: skip)")
    args = parser.parse_args(argv)

    plugin = LesionDetector()
    op = plugin.report_threshold
    outcomes = [evaluate(plugin, seed, args.rows, args.slices) for seed in range(args.studies)]
    faint = [evaluate(plugin, FAINT_SEED + n, args.rows, args.slices, faint=True) for n in range(args.faint)]
    positives = [o for o in outcomes if o.positive]
    negatives = [o for o in outcomes if not o.positive]
    auc = study_auc([o.probability for o in outcomes], [o.positive for o in outcomes])
    localised = sum(o.localised for o in positives) / len(positives)
    sens = sum(o.probability >= op for o in positives) / len(positives)
    spec = sum(o.probability < op for o in negatives) / len(negatives)
    distances = [o.distance_mm for o in positives if not np.isnan(o.distance_mm)]
    d_err = [abs(o.diameter_error) for o in positives if not np.isnan(o.diameter_error)]

    lines = [
        f"lesion-detector {plugin.version} | operating point p >= {op:.4f} | torch {torch.__version__} | "
        f"{os.cpu_count()} CPU(s), {torch.get_num_threads()} torch threads | "
        f"{platform.processor() or platform.machine()}",
        "",
        f"| {'metric':<46} | {'value':>16} | {'target':>10} | {'ok?':>4} |",
        "|" + "-" * 48 + "|" + "-" * 18 + "|" + "-" * 12 + "|" + "-" * 6 + "|",
        row(f"studies ({len(positives)} with a lesion), {args.slices}x{args.rows}x{args.rows}", str(len(outcomes))),
        row("study-level AUC", f"{auc:.4f}", f">= {TARGET_AUC}", auc >= TARGET_AUC),
        row("positives localised within lesion radius", f"{localised:.1%}", f">= {TARGET_LOCALISED:.0%}",
            localised >= TARGET_LOCALISED),
        row("sensitivity at the operating point", f"{sens:.1%}"),
        row("specificity at the operating point", f"{spec:.1%}"),
        row("max positive-study p / min", f"{max(o.probability for o in positives):.3f} / "
            f"{min(o.probability for o in positives):.3f}"),
        row("max negative-study p", f"{max(o.probability for o in negatives):.3f}"),
        row("false-positive findings per study", f"{sum(o.false_findings for o in outcomes) / len(outcomes):.2f}"),
        row("centre error, median / max (mm)",
            f"{statistics.median(distances):.2f} / {max(distances):.2f}" if distances else "n/a"),
        row("diameter |relative error|, median / max",
            f"{statistics.median(d_err):.1%} / {max(d_err):.1%}" if d_err else "n/a"),
        row("run time per study, median (s)", f"{statistics.median(o.seconds for o in outcomes):.2f}"),
    ]  # fmt: skip
    f_pos = [o for o in faint if o.positive]
    f_neg = [o for o in faint if not o.positive]
    if f_pos and f_neg:
        def share(flags: list[bool]) -> str:
            return f"{sum(flags) / len(flags):.1%}"

        lines += [
            row(f"small faint set ({len(f_pos)} with a lesion r 5-10 mm, 70-110 HU)", str(len(faint))),
            row("  study-level AUC", f"{study_auc([o.probability for o in faint], [o.positive for o in faint]):.4f}"),
            row("  sensitivity at the operating point", share([o.probability >= op for o in f_pos])),
            row("  specificity at the operating point", share([o.probability < op for o in f_neg])),
            row("  positives localised (finding at the op. point)", share([o.localised for o in f_pos])),
            row("  positives with best candidate localised", share([o.candidate_localised for o in f_pos])),
            row("  positive-study p, min / median", f"{min(o.probability for o in f_pos):.3f} / "
                f"{statistics.median(o.probability for o in f_pos):.3f}"),
            row("  false-positive findings per study", f"{sum(o.false_findings for o in faint) / len(faint):.2f}"),
        ]  # fmt: skip
    lines += ["", "calibration curve, study level, both sets (bin: studies, mean predicted p, observed lesion rate)"]
    lines += [f"  [{lo:.1f}, {hi:.1f}): {n:4d}  {mp:.3f}  {obs:.3f}" for lo, hi, n, mp, obs in
              calibration_curve(outcomes + faint)]  # fmt: skip
    held_out = plugin.calibration.trained_on.get("validation")
    if isinstance(held_out, dict):
        lines += ["calibration's held-out candidates (train.py; bin: candidates, mean predicted p, observed)"]
        lines += [f"  [{lo:.1f}, {hi:.1f}): {int(n):4d}  {mp:.3f}  {obs:.3f}" for lo, hi, n, mp, obs in
                  held_out.get("reliability", [])]  # fmt: skip
    lines.append("")
    if args.big_runs > 0:
        totals, loads, big = time_big(plugin, args.big_runs)
        total = statistics.median(totals)
        lines += [
            row("200x512x512 CT, bytes -> findings, median (s)", f"{total:.2f}", f"<= {TARGET_SECONDS:.0f}",
                total <= TARGET_SECONDS),
            row("  of which parse + decode + rescale (s)", f"{statistics.median(loads):.2f}"),
            row("  runs (s)", " ".join(f"{t:.2f}" for t in totals)),
            row("  findings / study p", f"{len(big.findings)} / {study_probability(big):.3f}"),
            row("peak RSS (MiB)", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}"),
        ]  # fmt: skip
    lines.append(f"\nload average (1/5/15 min) at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
