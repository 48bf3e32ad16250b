"""Lesion detector calibration, written by train.py; do not edit by hand."""

from typing import Any

CALIBRATION: dict[str, Any] = {
    "bias": -19.921764,
    "feature_names": ("log_response", "log_contrast", "log_radius"),
    "trained_on": {
        "candidates": 3200,
        "l2": 0.001,
        "lesion_hu": [100.0, 250.0],
        "lesion_radius_fraction_of_fov": [0.03, 0.09],
        "matrices": [[64, 20], [64, 32], [96, 40], [128, 48]],
        "seed": 100000,
        "studies": 400,
        "training_study_auc": 1.0,
    },
    "weights": (1.469361, 3.008556, 1.106534),
}
