"""Paired significance tests (registered by name), Holm–Bonferroni and the bootstrap interval.

Each test declares its name and how a caption describes it, and registers itself; `--test` takes
any registered name. All randomness has a fixed seed, so a comparison is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rerank_eval.errors import UserError

ALPHA = 0.05
SEED = 20261126
RESAMPLES = 10_000
#: the most paired values one batch of resamples holds (scipy's work on a batch peaks near 75 MB):
#: scipy draws the same permutations batch by batch as all at once, so the p-value is the same, but
#: all at once its work held about 70 bytes for each of RESAMPLES × n values (9 GB for
#: CQADupStack's 13,145 pooled queries)
RESAMPLED_VALUES_PER_BATCH = 1_000_000


@dataclass(frozen=True)
class PairedTest:
    name: str
    description: str  # as the caption says it: "paired two-sided t-test"
    p_value: Callable[[np.ndarray, np.ndarray], float]  # (run, baseline) -> two-sided p


TESTS: dict[str, PairedTest] = {}


def register(test: PairedTest) -> PairedTest:
    TESTS[test.name] = test
    return test


def paired_test(name: str) -> PairedTest:
    if name not in TESTS:
        raise UserError(f"unknown test {name!r}; use {' or '.join(TESTS)}")
    return TESTS[name]


#: differences that spread less than this fraction of their size do not vary but for float rounding
CONSTANT_SPREAD = 1e-9


def one_value(differences: np.ndarray) -> bool:
    """Whether the differences are one value, up to float rounding."""
    return bool(np.ptp(differences) <= CONSTANT_SPREAD * np.abs(differences).max())


def _t_test(run: np.ndarray, baseline: np.ndarray) -> float:
    """NaN (no p-value) where the differences are one value, up to float rounding: t divides their
    mean by their spread, so it is infinite, or with rounding any huge number (two average rows
    made of the same data once showed p<0.001 from scipy's catastrophic cancellation)."""
    from scipy import stats

    if one_value(run - baseline):
        return float("nan")
    return stats.ttest_rel(run, baseline).pvalue


def _randomization(run: np.ndarray, baseline: np.ndarray) -> float:
    from scipy import stats

    return stats.permutation_test(
        (run, baseline),
        lambda a, b, axis: np.mean(a - b, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=RESAMPLES,
        alternative="two-sided",
        random_state=SEED,
        batch=max(1, RESAMPLED_VALUES_PER_BATCH // len(run)),
    ).pvalue


register(PairedTest("t-test", "paired two-sided t-test", _t_test))
register(
    PairedTest(
        "randomization",
        f"paired two-sided randomization test ({RESAMPLES:,} resamples, seed {SEED})",
        _randomization,
    )
)


def paired_p_value(run: np.ndarray, baseline: np.ndarray, test: str) -> float | None:
    """Two-sided p-value of a paired test; 1.0 when every difference is zero; None where the test
    is undefined for these values (one pair, or a t-test of differences that do not vary)."""
    differences = run - baseline
    if len(differences) and not np.any(differences):
        return 1.0
    if len(differences) < 2:  # scipy's t-test gives NaN, its permutation test refuses
        return None
    p = paired_test(test).p_value(run, baseline)
    return None if np.isnan(p) else float(p)


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in input order."""
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def bootstrap_interval(differences: np.ndarray) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of the mean difference (fixed seed)."""
    from scipy import stats

    if len(differences) < 2 or one_value(differences):  # no spread to resample
        return None
    result = stats.bootstrap(
        (differences,), np.mean, confidence_level=0.95, n_resamples=RESAMPLES,
        method="percentile", random_state=SEED,
    )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
