"""Statistics over the members of an ensemble or the jobs of a multirun: means with confidence
intervals, two-sample comparisons, and the description of a double-descent curve.

- :func:`mean_ci`: mean, standard deviation and the Student-t confidence interval of the mean.
- :func:`compare_groups`: Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``;
  Welch 1947) and a percentile bootstrap interval of the difference of the means
  (``scipy.stats.bootstrap``; Efron & Tibshirani 1993, ch. 13).
- :func:`describe_double_descent`: interpolation threshold, first minimum, peak and second descent
  of a test-error curve (Belkin et al. 2019, Fig. 1; Nakkiran et al. 2019, Sec. 2).

scipy is needed for the intervals and the test (``pip install whylearn[science]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _scipy_stats():
    try:
        from scipy import stats
    except ImportError as e:  # pragma: no cover - scipy is in the science extra
        raise ImportError("the statistics need scipy: pip install 'whylearn[science]'") from e
    return stats


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean and the two-sided Student-t confidence interval of the mean of ``values``.

    Returns:
        ``n``, ``mean``, ``sd`` (sample standard deviation, ddof 1), ``sem`` (sd / sqrt(n)),
        ``ci_low``, ``ci_high`` (mean -+ t_{(1+confidence)/2, n-1} sem) and ``half_width``; the
        spread and interval are None for fewer than 2 values.

    Raises:
        ValueError: no values, a non-finite value, or confidence outside (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci needs at least one value")
    if not all(math.isfinite(v) for v in xs):
        raise ValueError(f"mean_ci got a non-finite value: {xs}")
    n, mean = len(xs), sum(xs) / len(xs)
    out: dict[str, Any] = {"n": n, "mean": mean, "sd": None, "sem": None, "ci_low": None, "ci_high": None,
                           "half_width": None, "confidence": confidence}
    if n < 2:
        return out
    sd = math.sqrt(sum((v - mean) ** 2 for v in xs) / (n - 1))
    sem = sd / math.sqrt(n)
    half = float(_scipy_stats().t.ppf((1 + confidence) / 2, n - 1)) * sem
    out.update({"sd": sd, "sem": sem, "ci_low": mean - half, "ci_high": mean + half, "half_width": half})
    return out


def compare_groups(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, n_resamples: int = 10_000,
                   seed: int = 0) -> dict[str, Any]:
    """Is mean(a) different from mean(b)? Welch's t-test and a bootstrap interval of mean(a) - mean(b).

    Args:
        a, b: the two samples (e.g. the test errors of the seeds of width 40 and of width 16).
        confidence: of the bootstrap interval.
        n_resamples, seed: of the bootstrap (``scipy.stats.bootstrap``, percentile method,
            independent resampling of each group).

    Returns:
        ``n_a``, ``n_b``, ``mean_a``, ``mean_b``, ``diff`` (mean_a - mean_b), ``t``, ``df``
        (Welch-Satterthwaite), ``p_value`` (two-sided), ``boot_low``, ``boot_high``.

    Raises:
        ValueError: a group with fewer than 2 values (no variance, no test).
    """
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"each group needs at least 2 values for a t-test, got {len(a)} and {len(b)}")
    stats = _scipy_stats()
    import numpy as np

    res = stats.ttest_ind(a, b, equal_var=False)
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else float("nan")

    def diff(x, y, axis=-1):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    boot = stats.bootstrap((np.asarray(a), np.asarray(b)), diff, n_resamples=n_resamples, confidence_level=confidence,
                           method="percentile", vectorized=True, random_state=np.random.default_rng(seed))
    return {"n_a": len(a), "n_b": len(b), "mean_a": float(np.mean(a)), "mean_b": float(np.mean(b)),
            "diff": float(np.mean(a) - np.mean(b)), "t": float(res.statistic), "df": float(df),
            "p_value": float(res.pvalue), "boot_low": float(boot.confidence_interval.low),
            "boot_high": float(boot.confidence_interval.high), "confidence": confidence}


def describe_double_descent(xs: Sequence[float], train_err: Sequence[float], test_err: Sequence[float],
                            tol: float = 0.0) -> dict[str, Any]:
    """The landmarks of a double-descent curve: test error against model size ``xs`` (ascending).

    - ``threshold_x``: the interpolation threshold, the smallest x whose training error is <= ``tol``
      with every larger x's too (None if no model interpolates);
    - ``first_min_x``, ``first_min``: the lowest test error of the models below the threshold (the
      classical regime's best; all models if none interpolates);
    - ``peak_x``, ``peak``: the highest test error from the first minimum on;
    - ``second_min_x``, ``second_min``: the lowest test error after the peak (None if the peak is
      the largest model);
    - ``largest_x``, ``largest``: the largest model's test error;
    - ``second_minus_first``: second_min - first_min (< 0: the second descent goes below the first
      minimum); ``peak_minus_first``: the height of the bump; ``peak_over_threshold``: peak_x /
      threshold_x (1: the peak sits at the interpolation threshold).

    Raises:
        ValueError: sequences of different lengths, or xs not strictly ascending.
    """
    if not len(xs) == len(train_err) == len(test_err) or not xs:
        raise ValueError(f"xs, train_err and test_err must be non-empty and equally long: "
                         f"{len(xs)}, {len(train_err)}, {len(test_err)}")
    if any(b <= a for a, b in zip(xs[:-1], xs[1:], strict=False)):
        raise ValueError(f"xs must be strictly ascending, got {list(xs)}")
    n = len(xs)
    threshold = None
    for i in range(n - 1, -1, -1):
        if train_err[i] <= tol + 1e-12:
            threshold = i
        else:
            break
    below = list(range(threshold)) if threshold is not None else list(range(n))
    out: dict[str, Any] = {"threshold_x": xs[threshold] if threshold is not None else None,
                           "largest_x": xs[-1], "largest": test_err[-1]}
    first = min(below, key=lambda i: test_err[i]) if below else None
    out.update({"first_min_x": xs[first] if first is not None else None,
                "first_min": test_err[first] if first is not None else None})
    start = first if first is not None else 0
    peak = max(range(start, n), key=lambda i: test_err[i])
    out.update({"peak_x": xs[peak], "peak": test_err[peak]})
    after = list(range(peak + 1, n))
    second = min(after, key=lambda i: test_err[i]) if after else None
    out.update({"second_min_x": xs[second] if second is not None else None,
                "second_min": test_err[second] if second is not None else None})
    out["second_minus_first"] = (test_err[second] - test_err[first]) if second is not None and first is not None else None
    out["peak_minus_first"] = (test_err[peak] - test_err[first]) if first is not None else None
    out["peak_over_threshold"] = xs[peak] / xs[threshold] if threshold is not None and xs[threshold] else None
    return out
