"""Focal hyperdense lesion detection on a CT volume: windowing, multi-scale DoG blobs, calibration.

1. **Window.** Soft-tissue baseline = median HU of tissue-range voxels; the "excess density"
   image is ``clamp(HU - baseline, 0, cap)`` with bone (HU above ``baseline + bone_offset``) set to
   zero, so lungs, fat, air and bone are all background and only tissue denser than its
   surroundings remains.
2. **Resample.** Block-average to about ``target_mm`` voxels (mass-preserving, noise-reducing).
3. **Blobs.** Scale-normalised difference-of-Gaussians (an approximation of σ²∇²G) at scales
   matched to spheres of radius ``radii_mm``; candidates are the space-scale maxima, greedily
   suppressed where they overlap a stronger one.
4. **Measure.** For each candidate: contrast (mean excess in the inner half-radius ball), a
   half-maximum region giving the centroid and the volume-equivalent diameter.
5. **Calibrate.** A logistic layer over log-features (trained by ``train.py`` on synthetic studies
   from the test factory, lesions spanning sizes and contrasts) turns each candidate into a
   probability; the study-level probability is that of the best candidate. The operating point
   (the probability from which a candidate is a positive call) comes from the same calibration run,
   chosen on held-out studies.
"""

from __future__ import annotations

import functools
import math
import pprint
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

__all__ = [
    "CALIBRATION_PATH",
    "Calibration",
    "Candidate",
    "Detection",
    "DetectorParams",
    "candidate_features",
    "detect",
    "lesion_mask",
]

CALIBRATION_PATH = Path(__file__).with_name("calibration_data.py")
"""Where ``train.py`` writes the fitted layer: a Python module, so it ships in any wheel."""


@dataclass(frozen=True)
class DetectorParams:
    """Fixed pipeline constants (not learned)."""

    tissue_range: tuple[float, float] = (-150.0, 250.0)
    """HU range whose median is taken as the soft-tissue baseline."""
    cap: float = 400.0
    """Largest excess density counted, HU."""
    bone_offset: float = 300.0
    """Voxels denser than baseline + this are bone (and count as background)."""
    target_mm: float = 3.5
    """Approximate voxel size after block averaging."""
    radii_mm: tuple[float, ...] = (5.0, 7.0, 10.0, 14.0, 20.0, 28.0, 40.0)
    """Sphere radii the DoG scales are matched to (√2 steps; the last one only bounds the search)."""
    max_candidates: int = 8
    min_response: float = 2.0
    """Candidates with a DoG response below this (HU) are noise."""


@dataclass(frozen=True)
class Candidate:
    """A blob: where (voxel indices of the input volume), how big and how dense."""

    center_index: tuple[float, float, float]
    """(slice, row, column), fractional, in the input volume."""
    radius_mm: float
    """Volume-equivalent radius of the half-maximum region."""
    scale_radius_mm: float
    """Radius of the best-matching DoG scale."""
    response: float
    """Scale-normalised DoG response, HU."""
    contrast: float
    """Mean excess density in the inner half-radius ball, HU."""
    probability: float = 0.0


@dataclass(frozen=True)
class Detection:
    """What :func:`detect` found: candidates, strongest first, and the soft-tissue baseline (HU)."""

    candidates: list[Candidate]
    baseline: float


@dataclass(frozen=True)
class Calibration:
    """Logistic layer over :func:`candidate_features`: p = σ(w·x + b)."""

    weights: tuple[float, ...]
    bias: float
    feature_names: tuple[str, ...] = ("log_response", "log_contrast", "log_radius")
    operating_point: float = 0.5
    """Candidates at or above this probability are positive calls (chosen by ``train.py`` on held-out
    studies: the threshold of the largest Youden index, sensitivity + specificity - 1)."""
    trained_on: dict[str, object] = field(default_factory=dict)

    @classmethod
    def load(cls) -> Calibration:
        """The calibration shipped with the package (``calibration_data.py``)."""
        from ai_plugins.builtin.lesion_detector.calibration_data import CALIBRATION

        return cls.from_dict(CALIBRATION)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        return cls(
            weights=tuple(float(w) for w in raw["weights"]),
            bias=float(raw["bias"]),
            feature_names=tuple(raw["feature_names"]),
            operating_point=float(raw.get("operating_point", 0.5)),
            trained_on=dict(raw.get("trained_on", {})),
        )

    def save(self, path: Path = CALIBRATION_PATH) -> None:
        """Write the calibration as a Python module (``CALIBRATION = {...}``)."""
        body = pprint.pformat(asdict(self), indent=4, width=100, sort_dicts=True)
        path.write_text(
            f'"""Lesion detector calibration, written by train.py; do not edit by hand."""\n\n'
            f"from typing import Any\n\nCALIBRATION: dict[str, Any] = {body}\n",
            encoding="utf-8",
        )

    def probability(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = features @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-z))


def candidate_features(c: Candidate) -> npt.NDArray[np.float64]:
    """The calibration's inputs for one candidate."""
    return np.array(
        [math.log1p(max(c.response, 0.0)), math.log1p(max(c.contrast, 0.0)), math.log(max(c.radius_mm, 1.0))]
    )


# --------------------------------------------------------------------------------------------
# torch helpers


def _gaussian_kernel(sigma_vox: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma_vox)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / max(sigma_vox, 1e-3)) ** 2)
    return k / k.sum()


@functools.lru_cache(maxsize=256)
def _blur_matrix(size: int, sigma_vox: float) -> torch.Tensor:
    """(size, size) matrix ``M`` with ``M @ v`` = the Gaussian blur of ``v`` with edges replicated.

    Kernel taps that fall outside ``v`` read its edge value; when the kernel is longer than ``v``
    it is clamped to ``2·size - 1`` taps and renormalised.
    """
    k = _gaussian_kernel(sigma_vox).to(torch.float64)
    r = (len(k) - 1) // 2
    if r >= size:
        k = k[r - (size - 1) : r + size]
        k = k / k.sum()
        r = size - 1
    offsets = torch.arange(-r, r + 1)
    src = (torch.arange(size)[:, None] + offsets[None, :]).clamp_(0, size - 1)
    m = torch.zeros(size, size, dtype=torch.float64)
    m.scatter_add_(1, src, k.expand(size, -1).contiguous())
    return m.to(torch.float32)


def _blur(x: torch.Tensor, sigma_mm: float, spacing: tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, Z, Y, X) tensor; edges replicate.

    Each axis is one matrix product with :func:`_blur_matrix` (the block-averaged grid is at most a
    few hundred voxels along an axis, and a BLAS product is an order of magnitude faster on a CPU
    than ``conv3d`` with a one-dimensional kernel).
    """
    out = x
    for axis, step in enumerate(spacing):
        sigma = sigma_mm / step
        if sigma < 0.2:
            continue
        dim = 2 + axis
        m = _blur_matrix(int(out.shape[dim]), float(sigma))
        out = torch.movedim(torch.movedim(out, dim, -1) @ m.T, -1, dim)
    return out.contiguous()


def _baseline(hu: torch.Tensor, params: DetectorParams) -> float:
    """Median HU of tissue-range voxels, on a ~2-million-voxel subsample."""
    step = max(1, int(round((hu.numel() / 2_000_000) ** (1 / 3))))
    sample = hu[::step, ::step, ::step].reshape(-1)
    lo, hi = params.tissue_range
    tissue = sample[(sample >= lo) & (sample <= hi)]
    return float(tissue.median()) if tissue.numel() else 40.0


def _excess_density_blocks(
    hu: torch.Tensor, baseline: float, block: tuple[int, int, int], params: DetectorParams
) -> torch.Tensor:
    """Block averages of clamp(HU - baseline, 0, cap) with bone zeroed, as (1, 1, Z, Y, X).

    Done a slab of slices at a time so the full-resolution excess image never exists at once.
    """
    slab = block[0] * max(1, 16 // block[0])
    out = []
    for z0 in range(0, hu.shape[0], slab):
        chunk = hu[z0 : z0 + slab]
        excess = (chunk - baseline).clamp_(0.0, params.cap)
        excess.masked_fill_(chunk > baseline + params.bone_offset, 0.0)
        kernel = tuple(min(b, n) for b, n in zip(block, excess.shape, strict=True))
        pooled = excess[None, None]
        if kernel != (1, 1, 1):
            pooled = F.avg_pool3d(pooled, kernel_size=kernel, stride=kernel, ceil_mode=True)
        out.append(pooled)
    return torch.cat(out, dim=2)


def _block_factors(spacing: tuple[float, float, float], target_mm: float) -> tuple[int, int, int]:
    z, y, x = (max(1, int(math.floor(target_mm / s + 0.5))) for s in spacing)
    return (z, y, x)


def detect(
    hu_volume: npt.NDArray[np.float32], spacing: tuple[float, float, float], params: DetectorParams | None = None
) -> Detection:
    """Candidate blobs in a (slices, rows, columns) HU volume with voxel ``spacing`` (z, y, x) mm."""
    params = params or DetectorParams()
    with torch.inference_mode():
        hu = torch.from_numpy(np.ascontiguousarray(hu_volume, dtype=np.float32))
        baseline = _baseline(hu, params)
        factors = _block_factors(spacing, params.target_mm)
        z, y, x = (min(b, n) for b, n in zip(factors, hu.shape, strict=True))
        shape = (z, y, x)
        f = _excess_density_blocks(hu, baseline, shape, params)
        ds_spacing = (spacing[0] * shape[0], spacing[1] * shape[1], spacing[2] * shape[2])

        # DoG at sigma_i = r_i / sqrt(3) (σ²∇²G of a ball of radius r peaks there, Lindeberg 1998)
        sigmas = [r / math.sqrt(3.0) for r in params.radii_mm]
        blurred = [_blur(f, s, ds_spacing) for s in sigmas]
        ratio = sigmas[1] / sigmas[0]
        norm = 1.0 / (ratio - 1.0)  # (G(σ) - G(kσ)) / (k - 1) ≈ -σ²∇²G, scale-normalised
        dog = torch.cat([(blurred[i] - blurred[i + 1]) * norm for i in range(len(sigmas) - 1)], dim=1)[0]
        response, scale_idx = dog.max(dim=0)
        pooled = F.max_pool3d(response[None, None], kernel_size=3, stride=1, padding=1)[0, 0]
        peaks = torch.nonzero((response == pooled) & (response > params.min_response))
        values = response[peaks[:, 0], peaks[:, 1], peaks[:, 2]]
        order = torch.argsort(values, descending=True)[: params.max_candidates * 8]
        peaks, values = peaks[order], values[order]

        fine = blurred[0][0, 0]
        grid = f[0, 0]
        chosen: list[Candidate] = []
        kept: list[tuple[npt.NDArray[np.float64], float]] = []
        step = np.asarray(ds_spacing)
        for p, v in zip(peaks.tolist(), values.tolist(), strict=True):
            scale_r = params.radii_mm[int(scale_idx[p[0], p[1], p[2]])]
            pos_mm = np.asarray(p, dtype=np.float64) * step
            # a weaker blob overlapping a stronger one is its rim (the fine-scale DoG ridges just
            # inside a large sphere's surface), not a lesion of its own
            if any(float(np.linalg.norm(pos_mm - q)) < r + scale_r for q, r in kept):
                continue
            cand = _measure(grid, fine, p, scale_r, float(v), ds_spacing)
            centre_mm = np.asarray(cand.center_index) * step
            if any(float(np.linalg.norm(centre_mm - q)) < r for q, r in kept):
                continue
            kept.append((np.asarray(cand.center_index) * step, max(cand.radius_mm, scale_r)))
            chosen.append(_to_input_index(cand, shape))
            if len(chosen) >= params.max_candidates:
                break
    return Detection(candidates=chosen, baseline=baseline)


def _ball(
    grid: torch.Tensor, center: list[int], radius_mm: float, spacing: tuple[float, float, float]
) -> tuple[tuple[slice, slice, slice], torch.Tensor]:
    """The box around ``center`` holding a ball of ``radius_mm``, and the ball's mask in it."""
    rad = [max(1, int(math.ceil(radius_mm / s))) for s in spacing]
    box = tuple(slice(max(0, c - r), min(n, c + r + 1)) for c, r, n in zip(center, rad, grid.shape, strict=True))
    axes = [
        (torch.arange(b.start, b.stop, dtype=torch.float32) - c) * s
        for b, c, s in zip(box, center, spacing, strict=True)
    ]
    zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
    return (box[0], box[1], box[2]), (zz**2 + yy**2 + xx**2) <= radius_mm**2


def _measure(
    grid: torch.Tensor,
    fine: torch.Tensor,
    peak: list[int],
    scale_r: float,
    response: float,
    spacing: tuple[float, float, float],
) -> Candidate:
    box, inner = _ball(grid, peak, max(scale_r / 2.0, min(spacing)), spacing)
    contrast = float(fine[box][inner].mean()) if bool(inner.any()) else float(fine[tuple(peak)])
    box, outer = _ball(grid, peak, 1.5 * scale_r, spacing)
    patch = grid[box]
    region = outer & (patch > 0.5 * contrast)
    voxel = spacing[0] * spacing[1] * spacing[2]
    if bool(region.any()) and contrast > 0:
        w = (patch - 0.5 * contrast).clamp(min=0.0) * region
        idx = torch.nonzero(region).to(torch.float32)
        weights = w[region]
        centroid = (idx * weights[:, None]).sum(0) / weights.sum().clamp(min=1e-6)
        center = [float(centroid[a]) + box[a].start for a in range(3)]
        volume = float(region.sum()) * voxel
    else:
        center = [float(c) for c in peak]
        volume = 4.0 / 3.0 * math.pi * scale_r**3
    radius = (3.0 * volume / (4.0 * math.pi)) ** (1.0 / 3.0)
    return Candidate(
        center_index=(center[0], center[1], center[2]),
        radius_mm=radius,
        scale_radius_mm=scale_r,
        response=response,
        contrast=contrast,
    )


def _to_input_index(c: Candidate, block: tuple[int, ...]) -> Candidate:
    """Block-grid indices → input-volume indices (block centres)."""
    idx = tuple(v * b + (b - 1) / 2.0 for v, b in zip(c.center_index, block, strict=True))
    return Candidate(
        center_index=(idx[0], idx[1], idx[2]),
        radius_mm=c.radius_mm,
        scale_radius_mm=c.scale_radius_mm,
        response=c.response,
        contrast=c.contrast,
        probability=c.probability,
    )


def lesion_mask(
    hu_volume: npt.NDArray[np.float32],
    spacing: tuple[float, float, float],
    candidate: Candidate,
    baseline: float,
    params: DetectorParams | None = None,
) -> npt.NDArray[np.bool_]:
    """Full-resolution mask of one candidate: voxels above half its contrast within 1.5 radii."""
    params = params or DetectorParams()
    mask = np.zeros(hu_volume.shape, dtype=bool)
    reach = 1.5 * max(candidate.radius_mm, candidate.scale_radius_mm)
    center = np.asarray(candidate.center_index)
    lo = [max(0, int(math.floor(c - reach / s))) for c, s in zip(center, spacing, strict=True)]
    hi = [min(n, int(math.ceil(c + reach / s)) + 1) for c, s, n in zip(center, spacing, hu_volume.shape, strict=True)]
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return mask
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, center, spacing, strict=True)]
    dist2 = axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2
    patch = hu_volume[box] - baseline
    dense = (patch > 0.5 * candidate.contrast) & (patch <= params.bone_offset)
    mask[box] = dense & (dist2 <= reach**2)
    return mask
