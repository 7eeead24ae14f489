"""The band over seeds that plot.py's figures and tables draw around a setting's mean: one sample
standard deviation (`std`, ddof = 1), or the half-width of the 95% confidence interval of the
mean (`ci95`, Student t with n - 1 degrees of freedom). A single run has no band."""

from __future__ import annotations

import math

BANDS = ("std", "ci95")
NAMES = {"std": "1 std (sample)", "ci95": "95% CI of the mean (t)"}
LINE = "Mean ± {} over the runs of each setting."   # the first line of summary.md and passk.md
# Student t quantile t_{0.975, df} for df = 1..30 (beyond: the normal 1.960), for 95% intervals
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of a non-empty list."""
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, spread


def spread(values: list[float], band: str) -> tuple[float, float]:
    """Mean and half-width of the band (`std` or `ci95`) of a non-empty list of runs' values."""
    mean, std = mean_std(values)
    if band == "ci95" and len(values) > 1:
        df = len(values) - 1
        return mean, (T975[df - 1] if df <= len(T975) else 1.960) * std / math.sqrt(len(values))
    return mean, std


def text(mean: float, half: float, runs: int) -> str:
    """A table cell: "mean ± half-width", the mean alone for fewer than two runs (no band)."""
    return f"{mean:.3f} ± {half:.3f}" if runs > 1 else f"{mean:.3f}"


def cell(values: list[float], band: str = "std") -> str:
    """The table cell of runs' values (text of spread), or "-" for no values."""
    return text(*spread(values, band), len(values)) if values else "-"
