"""Benchmark of the built-in ``lesion-detector`` plugin against the issue's targets; prints a table.

    .venv/bin/python benchmarks/lesion_detector_bench.py [--studies 100] [--rows 128] [--slices 64] [--big-runs 3]

* Accuracy set: ``--studies`` synthetic CT studies from ``tests/factories.py`` (seeds 0..N-1, even
  seeds carry one random spherical lesion of radius 4-8 % of the 350 mm field of view, odd seeds
  none), run end to end through ``LesionDetector().run(StudyInput)``. Study-level AUC from the
  "High density lesion" classification probability; a positive counts as localised when the
  most probable reported finding's 3D point lies within the true lesion radius of its centre.
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
from tests.factories import make_ct_case, to_bytes  # noqa: E402

TARGET_AUC = 0.95
TARGET_LOCALISED = 0.90
TARGET_SECONDS = 10.0


@dataclass
class Outcome:
    positive: bool
    probability: float
    localised: bool
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


def evaluate(plugin: LesionDetector, seed: int, rows: int, slices: int) -> Outcome:
    positive = seed % 2 == 0
    case = make_ct_case(lesion="random" if positive else None, seed=seed, rows=rows, cols=rows, n_slices=slices)
    started = time.perf_counter()
    findings = plugin.run(StudyInput.from_datasets(case.datasets))
    seconds = time.perf_counter() - started
    p = study_probability(findings)
    localised, distance, diameter_error = False, float("nan"), float("nan")
    false_findings = 0
    for f in findings.findings:
        hit = (
            case.lesion is not None
            and isinstance(f.region, Point3D)
            and np.linalg.norm(np.asarray(f.region.as_tuple()) - np.asarray(case.lesion.center_mm))
            <= case.lesion.radius_mm
        )
        false_findings += not hit
    if case.lesion is not None and findings.findings:
        top = max(findings.findings, key=lambda f: f.probability or 0.0)
        if isinstance(top.region, Point3D):
            distance = float(np.linalg.norm(np.asarray(top.region.as_tuple()) - np.asarray(case.lesion.center_mm)))
            localised = distance <= case.lesion.radius_mm
        diameter = top.measurement(codes.DIAMETER)
        if diameter is not None:
            diameter_error = diameter.value / (2 * case.lesion.radius_mm) - 1.0
    return Outcome(positive, p, localised, distance, diameter_error, seconds, false_findings)


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
    parser.add_argument("--rows", type=int, default=128, help="matrix (rows = columns) of the accuracy set")
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--big-runs", type=int, default=3, help="timed runs of the 200x512x512 CT (0: skip)")
    args = parser.parse_args(argv)

    plugin = LesionDetector()
    outcomes = [evaluate(plugin, seed, args.rows, args.slices) for seed in range(args.studies)]
    positives = [o for o in outcomes if o.positive]
    negatives = [o for o in outcomes if not o.positive]
    auc = study_auc([o.probability for o in outcomes], [o.positive for o in outcomes])
    localised = sum(o.localised for o in positives) / len(positives)
    sens = sum(o.probability >= 0.5 for o in positives) / len(positives)
    spec = sum(o.probability < 0.5 for o in negatives) / len(negatives)
    distances = [o.distance_mm for o in positives if not np.isnan(o.distance_mm)]
    d_err = [abs(o.diameter_error) for o in positives if not np.isnan(o.diameter_error)]

    lines = [
        f"lesion-detector {plugin.version} | torch {torch.__version__} | {os.cpu_count()} CPU(s), "
        f"{torch.get_num_threads()} torch threads | {platform.processor() or platform.machine()}",
        "",
        f"| {'metric':<46} | {'value':>16} | {'target':>10} | {'ok?':>4} |",
        "|" + "-" * 48 + "|" + "-" * 18 + "|" + "-" * 12 + "|" + "-" * 6 + "|",
        row(f"studies ({len(positives)} with a lesion), {args.slices}x{args.rows}x{args.rows}", str(len(outcomes))),
        row("study-level AUC", f"{auc:.4f}", f">= {TARGET_AUC}", auc >= TARGET_AUC),
        row("positives localised within lesion radius", f"{localised:.1%}", f">= {TARGET_LOCALISED:.0%}",
            localised >= TARGET_LOCALISED),
        row("sensitivity at p >= 0.5", f"{sens:.1%}"),
        row("specificity at p >= 0.5", f"{spec:.1%}"),
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
