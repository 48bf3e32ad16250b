"""Dev/test splits: stratified by label and reproducible from a seed.

Within each stratum the cases are ordered by SHA-256 of ``seed:StudyInstanceUID`` (stable across
machines and library versions) and the first ones go to test; how many each stratum gives is its
share of ``round(n × test_fraction)`` by largest remainder. Two constraints come first, because
what has been disclosed cannot be hidden again and what has been hidden must stay hidden: a study
already published to vendors (a dev copy exists) stays dev, and a study that is test anywhere (this
benchmark's earlier versions or another benchmark) stays test.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Set


def _order_key(seed: int, study_uid: str) -> str:
    return hashlib.sha256(f"{seed}:{study_uid}".encode()).hexdigest()


def _quotas(sizes: Mapping[str, int], total_test: int) -> dict[str, int]:
    """Largest-remainder apportionment of ``total_test`` over strata of the given sizes."""
    n = sum(sizes.values())
    if n == 0:
        return dict.fromkeys(sizes, 0)
    exact = {k: total_test * v / n for k, v in sizes.items()}
    quotas = {k: math.floor(v) for k, v in exact.items()}
    left = total_test - sum(quotas.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - quotas[k]), k))[:left]:
        quotas[k] += 1
    return quotas


def assign_splits(strata: Mapping[str, str], *, seed: int, test_fraction: float,
                  must_test: Set[str] = frozenset(), must_dev: Set[str] = frozenset()) -> dict[str, str]:  # fmt: skip
    """``{study_uid: "dev" | "test"}`` for ``strata`` (``{study_uid: stratum}``)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be between 0 and 1")
    by_stratum: dict[str, list[str]] = {}
    for uid, stratum in strata.items():
        by_stratum.setdefault(stratum, []).append(uid)
    quotas = _quotas({k: len(v) for k, v in by_stratum.items()}, round(len(strata) * test_fraction))
    out: dict[str, str] = {}
    for stratum, uids in sorted(by_stratum.items()):
        forced_test = [u for u in uids if u in must_test]
        forced_dev = [u for u in uids if u in must_dev and u not in must_test]
        free = sorted((u for u in uids if u not in must_test and u not in must_dev),
                      key=lambda u: _order_key(seed, u))  # fmt: skip
        room = max(0, quotas[stratum] - len(forced_test))
        for uid in forced_test + free[:room]:
            out[uid] = "test"
        for uid in forced_dev + free[room:]:
            out[uid] = "dev"
    return out
