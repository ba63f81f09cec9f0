"""Shared figures of the benchmarks."""

from __future__ import annotations


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values; NaN for none."""
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
