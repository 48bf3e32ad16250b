"""Fit the lesion detector's logistic calibration on synthetic CT studies; writes calibration_data.py.

Run from the repository root (it uses the test data factory in ``tests/factories.py``)::

    .venv/bin/python -m ai_plugins.builtin.lesion_detector.train [--studies 400] [--seed 100000]

The training studies are deliberately broader than the benchmark's: lesion radius 3–9 % of the
field of view, lesion density 100–250 HU, four matrix sizes; seeds start at 100000 so they never
coincide with the benchmark's (0–99). Each candidate the pipeline proposes is labelled positive
when it lies within the true lesion radius; a logistic layer (torch, L-BFGS, L2 penalty) maps its
log-features to a probability.
"""

from __future__ import annotations

import argparse
import sys
import time
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
from ai_plugins.sdk import StudyInput

MATRICES: tuple[tuple[int, int], ...] = ((64, 20), (64, 32), (96, 40), (128, 48))
"""(rows = columns, slices) of the training studies."""
HU_RANGE = (100.0, 250.0)
RADIUS_FRACTION = (0.03, 0.09)
L2 = 1e-3


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
    """One synthetic study (positive for even ``index``) turned into labelled candidates."""
    factories = _factory()
    rng = np.random.default_rng([seed, index])
    size, n_slices = MATRICES[index % len(MATRICES)]
    positive = index % 2 == 0
    kwargs = {"rows": size, "cols": size, "n_slices": n_slices, "seed": seed + index}
    lesion = None
    if positive:
        placed = factories.make_ct_case(lesion="random", **kwargs).lesion
        radius = float(rng.uniform(*RADIUS_FRACTION)) * factories.FOV_MM
        lesion = factories.Lesion(placed.center_mm, round(radius, 2), float(rng.uniform(*HU_RANGE)))
    case = factories.make_ct_case(lesion=lesion, **kwargs)
    volume = StudyInput.from_datasets(case.datasets).series[0].volume
    candidates = detect(volume.array, volume.spacing, params).candidates
    feats = np.array([candidate_features(c) for c in candidates]).reshape(len(candidates), -1)
    labels = np.zeros(len(candidates))
    if lesion is not None:
        for n, c in enumerate(candidates):
            where = volume.index_to_patient(c.center_index)
            if float(np.linalg.norm(where - np.asarray(lesion.center_mm))) <= lesion.radius_mm:
                labels[n] = 1.0
    return Sample(features=feats, labels=labels, positive_study=positive)


def fit(samples: list[Sample]) -> tuple[npt.NDArray[np.float64], float]:
    """Logistic regression (with an L2 penalty on the weights) over every candidate."""
    x = torch.tensor(np.concatenate([s.features for s in samples]), dtype=torch.float64)
    y = torch.tensor(np.concatenate([s.labels for s in samples]), dtype=torch.float64)
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + L2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach())


def study_auc(scores: list[float], positive: list[bool]) -> float:
    """Mann–Whitney AUC (ties count half)."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return float("nan")
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=400)
    parser.add_argument("--seed", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=CALIBRATION_PATH)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    params = DetectorParams()
    started = time.perf_counter()
    samples = [make_sample(i, args.seed, params) for i in range(args.studies)]
    weights, bias = fit(samples)
    calibration = Calibration(
        weights=tuple(round(float(v), 6) for v in weights),
        bias=round(bias, 6),
        trained_on={
            "studies": args.studies,
            "seed": args.seed,
            "matrices": [list(m) for m in MATRICES],
            "lesion_hu": list(HU_RANGE),
            "lesion_radius_fraction_of_fov": list(RADIUS_FRACTION),
            "l2": L2,
            "candidates": int(sum(len(s.labels) for s in samples)),
        },
    )
    scores = [float(calibration.probability(s.features).max()) if len(s.labels) else 0.0 for s in samples]
    auc = study_auc(scores, [s.positive_study for s in samples])
    calibration.trained_on["training_study_auc"] = round(auc, 4)
    calibration.save(args.out)
    print(
        f"{args.studies} studies in {time.perf_counter() - started:.0f} s; weights {calibration.weights}, "
        f"bias {calibration.bias}; training study-level AUC {auc:.4f}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
