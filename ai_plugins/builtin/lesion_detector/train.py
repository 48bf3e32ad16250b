"""Fit the lesion detector's logistic calibration on synthetic CT studies; writes calibration_data.py.

Run from the repository root (it uses the test data factory in ``tests/factories.py``)::

    .venv/bin/python -m ai_plugins.builtin.lesion_detector.train [--studies 500] [--validation 500] [--jobs 2]

The phantoms span sizes and contrasts beyond the benchmark's: lesion radius 1.5–9 % of the field of
view (5–32 mm, drawn log-uniformly so small lesions are as common as large ones), lesion density
70–250 HU over 40 HU soft tissue (contrast 30–210 HU), four matrix sizes; seeds start at 100000 so
they never coincide with the benchmark's (0–99). Each candidate the pipeline proposes is labelled
positive when it lies within the true lesion radius; a logistic layer (torch, L-BFGS, L2 penalty)
maps its log-features to a probability. The penalty is the one of ``L2_GRID`` with the lowest
candidate log-loss in 5-fold cross-validation over the training studies (folds by study): a
penalty too strong for these nearly separable candidates leaves the probabilities between 0.1 and
0.9 far below the observed lesion rates.

The operating point is chosen on ``--validation`` held-out studies (seeds after the training ones):
the study-level probability (the best candidate's) threshold with the largest Youden index
(sensitivity + specificity − 1), placed halfway (in log-odds) between the lowest probability it
calls positive and the next lower one, so it does not sit on a validation study's own score. The
reliability bins of the held-out candidates (predicted vs observed fraction of true lesions) are
recorded with it, and the figures of the calibration it replaces on the same held-out studies are
printed beside the new ones.

Cost: each study is rendered straight to its HU volume (``tests.factories.make_ct_volume``, the
voxels a DICOM reader presents for ``make_ct_case``, without building and parsing datasets) and
run through :func:`detect` with one torch thread per process; about 0.1 CPU-second a study, so the
default 500 + 500 studies take about 2 CPU-minutes. The result does not depend on ``--jobs``.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from ai_plugins.builtin.lesion_detector.pipeline import (
    CALIBRATION_PATH,
    Calibration,
    DetectorParams,
    candidate_features,
    detect,
)

MATRICES: tuple[tuple[int, int], ...] = ((64, 20), (64, 32), (96, 40), (128, 48))
"""(rows = columns, slices) of the training studies."""
HU_RANGE = (70.0, 250.0)
RADIUS_FRACTION = (0.015, 0.09)
L2_GRID: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
"""L2 penalties tried by cross-validation (the penalty is on the mean loss over candidates)."""
FOLDS = 5
RELIABILITY_BINS = 10


@dataclass
class Sample:
    features: npt.NDArray[np.float64]  # (n_candidates, n_features)
    labels: npt.NDArray[np.float64]  # (n_candidates,)
    positive_study: bool


def _factory():  # type: ignore[no-untyped-def]
    try:
        from tests import factories
    except ImportError as exc:  # pragma: no cover - only when run outside the repository
        sys.exit(f"run from the repository root (needs tests/factories.py): {exc}")
    return factories


def make_sample(index: int, seed: int, params: DetectorParams) -> Sample:
    """One synthetic study (positive for even ``index``) turned into labelled candidates.

    The volume comes straight from the factory's renderer (``make_ct_volume``: the voxels a DICOM
    reader would present for ``make_ct_case``, without building and parsing the datasets).
    """
    factories = _factory()
    rng = np.random.default_rng([seed, index])
    size, n_slices = MATRICES[index % len(MATRICES)]
    positive = index % 2 == 0
    kwargs = {"rows": size, "cols": size, "n_slices": n_slices, "seed": seed + index}
    lesion = None
    if positive:
        placed = factories.random_ct_lesion(**kwargs)
        low, high = np.log(RADIUS_FRACTION)
        radius = float(np.exp(rng.uniform(low, high))) * factories.FOV_MM
        lesion = factories.Lesion(placed.center_mm, round(radius, 2), float(rng.uniform(*HU_RANGE)))
    volume = factories.make_ct_volume(lesion=lesion, **kwargs)
    candidates = detect(volume.hu, volume.spacing, params).candidates
    feats = np.array([candidate_features(c) for c in candidates]).reshape(len(candidates), -1)
    labels = np.zeros(len(candidates))
    if lesion is not None:
        for n, c in enumerate(candidates):
            where = volume.index_to_patient(c.center_index)
            if float(np.linalg.norm(where - np.asarray(lesion.center_mm))) <= lesion.radius_mm:
                labels[n] = 1.0
    return Sample(features=feats, labels=labels, positive_study=positive)


def _one_thread() -> None:
    """Pool initializer: one torch thread per worker process (``--jobs`` processes share the CPUs)."""
    torch.set_num_threads(1)


def make_samples(count: int, seed: int, params: DetectorParams, jobs: int) -> list[Sample]:
    """Studies ``0..count-1`` from ``seed``; the result does not depend on ``jobs``."""
    indices = range(count)
    if jobs <= 1:
        return [make_sample(i, seed, params) for i in indices]
    with ProcessPoolExecutor(jobs, initializer=_one_thread) as pool:
        return list(pool.map(make_sample, indices, [seed] * count, [params] * count, chunksize=4))


def fit(samples: list[Sample], l2: float) -> tuple[npt.NDArray[np.float64], float]:
    """Logistic regression (with an L2 penalty ``l2`` on the weights) over every candidate."""
    x = torch.tensor(np.concatenate([s.features for s in samples]), dtype=torch.float64)
    y = torch.tensor(np.concatenate([s.labels for s in samples]), dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def log_loss(calibration: Calibration, samples: list[Sample]) -> float:
    """Mean binary cross-entropy of the candidates of ``samples``."""
    p = np.concatenate([calibration.probability(s.features) for s in samples] or [np.zeros(0)])
    y = np.concatenate([s.labels for s in samples] or [np.zeros(0)])
    if not len(y):
        return float("nan")
    p = np.clip(p, 1e-12, 1.0 - 1e-12)
    return float(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)).mean())


def choose_l2(samples: list[Sample], grid: tuple[float, ...] = L2_GRID, folds: int = FOLDS) -> tuple[float, float]:
    """(penalty, its cross-validated log-loss): the grid value with the lowest mean held-out log-loss."""
    folds = max(2, min(folds, len(samples)))
    best = (grid[0], float("inf"))
    for l2 in grid:
        losses = []
        for k in range(folds):
            w, b = fit([s for i, s in enumerate(samples) if i % folds != k], l2)
            held = [s for i, s in enumerate(samples) if i % folds == k]
            losses.append(log_loss(Calibration(tuple(w.tolist()), b), held))
        mean = float(np.nanmean(losses)) if not np.isnan(losses).all() else float("inf")
        if mean < best[1] - 1e-12:
            best = (l2, mean)
    return best


def study_auc(scores: list[float], positive: list[bool]) -> float:
    """Mann–Whitney AUC (ties count half)."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def operating_point(scores: list[float], positive: list[bool]) -> tuple[float, float, float]:
    """(threshold, sensitivity, specificity) of the largest Youden index over study-level scores.

    Ties go to the higher threshold (fewer positive calls); the threshold sits halfway, in log-odds,
    between the lowest score it calls positive and the next lower score.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    levels = np.unique(s)[::-1]
    best = (-2.0, 0.5, 0.0, 0.0)
    for k, t in enumerate(levels):
        called = s >= t
        sens = float((called & y).sum()) / n_pos
        spec = float((~called & ~y).sum()) / n_neg
        if sens + spec - 1.0 > best[0] + 1e-12:
            below = levels[k + 1] if k + 1 < len(levels) else 0.0
            best = (sens + spec - 1.0, _logit_midpoint(float(t), float(below)), sens, spec)
    return best[1], best[2], best[3]


def _logit_midpoint(a: float, b: float) -> float:
    eps = 1e-6
    la, lb = (float(np.log(v / (1 - v))) for v in (min(max(a, eps), 1 - eps), min(max(b, eps), 1 - eps)))
    return float(1.0 / (1.0 + np.exp(-(la + lb) / 2.0)))


def reliability(probabilities: npt.NDArray[np.float64], labels: npt.NDArray[np.float64],
                bins: int = RELIABILITY_BINS) -> list[list[float]]:  # fmt: skip
    """Calibration curve: per equal-width probability bin ``[low, high, n, mean predicted, observed]``."""
    out: list[list[float]] = []
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1]), 0, bins - 1)
    for b in range(bins):
        chosen = which == b
        n = int(chosen.sum())
        if n:
            out.append(
                [
                    round(float(edges[b]), 2),
                    round(float(edges[b + 1]), 2),
                    n,
                    round(float(probabilities[chosen].mean()), 4),
                    round(float(labels[chosen].mean()), 4),
                ]
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--validation", type=int, default=500, help="held-out studies for the operating point")
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=CALIBRATION_PATH)
    parser.add_argument("--jobs", type=int, default=1, help="processes generating and detecting the studies")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    params = DetectorParams()
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic sums; the CPUs go to --jobs processes instead
    try:
        made = make_samples(args.studies + args.validation, args.seed, params, args.jobs)
        detected = time.perf_counter()
        samples, held_out = made[: args.studies], made[args.studies :]
        l2, cv_loss = choose_l2(samples)
        weights, bias = fit(samples, l2)
    finally:
        torch.set_num_threads(threads)
    previous = _previous(args.out)
    fitted = Calibration(weights=tuple(round(float(v), 6) for v in weights), bias=round(bias, 6))
    scores = study_scores(fitted, held_out)
    truth = [s.positive_study for s in held_out]
    threshold = round(operating_point(scores, truth)[0], 4) if held_out else 0.5
    validation = held_out_figures(fitted, held_out, threshold)
    train_scores = study_scores(fitted, samples)
    calibration = Calibration(
        weights=fitted.weights,
        bias=fitted.bias,
        operating_point=threshold,
        trained_on={
            "studies": args.studies,
            "seed": args.seed,
            "matrices": [list(m) for m in MATRICES],
            "lesion_hu": list(HU_RANGE),
            "lesion_radius_fraction_of_fov": list(RADIUS_FRACTION),
            "l2": l2,
            "l2_cross_validation": {"grid": list(L2_GRID), "folds": FOLDS, "log_loss": round(cv_loss, 5)},
            "candidates": int(sum(len(s.labels) for s in samples)),
            "training_study_auc": round(study_auc(train_scores, [s.positive_study for s in samples]), 4),
            "validation": validation,
        },
    )
    calibration.save(args.out)
    print(
        f"{args.studies} + {args.validation} studies: generated and detected in {detected - started:.0f} s "
        f"({args.jobs} job(s)), fitted in {time.perf_counter() - detected:.1f} s; L2 {l2:g} (cross-validated "
        f"log-loss {cv_loss:.5f}); weights {calibration.weights}, "
        f"bias {calibration.bias}; wrote {args.out}"
    )
    print(_describe("new calibration", threshold, validation))
    if previous is not None and held_out:
        print(_describe("previous calibration, same held-out studies", previous.operating_point,
                        held_out_figures(previous, held_out, previous.operating_point)))  # fmt: skip
    return 0


def study_scores(calibration: Calibration, samples: list[Sample]) -> list[float]:
    """Study-level probability of each sample: its best candidate's (0 without a candidate)."""
    return [float(calibration.probability(s.features).max()) if len(s.labels) else 0.0 for s in samples]


def held_out_figures(calibration: Calibration, held_out: list[Sample], threshold: float) -> dict[str, object]:
    """Study AUC, sensitivity and specificity at ``threshold``, and candidate reliability bins."""
    scores = np.asarray(study_scores(calibration, held_out))
    truth = np.asarray([s.positive_study for s in held_out], dtype=bool)
    candidates = [s for s in held_out if len(s.labels)]
    probabilities = np.concatenate([calibration.probability(s.features) for s in candidates] or [np.zeros(0)])
    labels = np.concatenate([s.labels for s in candidates] or [np.zeros(0)])
    called = scores >= threshold
    return {
        "studies": len(held_out),
        "study_auc": round(study_auc(scores.tolist(), truth.tolist()), 4),
        "sensitivity": round(float((called & truth).sum()) / max(int(truth.sum()), 1), 4),
        "specificity": round(float((~called & ~truth).sum()) / max(int((~truth).sum()), 1), 4),
        "log_loss": round(log_loss(calibration, candidates), 5),
        "reliability": reliability(probabilities, labels),
    }


def _previous(path: Path) -> Calibration | None:
    """The calibration about to be replaced (for the before/after figures), if ``path`` holds one."""
    if not path.exists():
        return None
    try:
        return Calibration.from_dict(runpy.run_path(str(path))["CALIBRATION"])
    except Exception:  # noqa: BLE001 - a broken file is simply replaced
        return None


def _describe(title: str, threshold: float, figures: dict[str, object]) -> str:
    lines = [
        f"{title}: operating point {threshold:.4f}, held-out ({figures['studies']} studies) AUC "
        f"{figures['study_auc']}, sensitivity {figures['sensitivity']}, specificity {figures['specificity']}, "
        f"candidate log-loss {figures['log_loss']}",
        "  candidate reliability (bin: candidates, mean predicted p, observed lesion rate)",
    ]
    bins = figures["reliability"]
    assert isinstance(bins, list)
    lines += [f"  [{lo:.1f}, {hi:.1f}): {int(n):5d}  {mp:.3f}  {obs:.3f}" for lo, hi, n, mp, obs in bins]
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())
