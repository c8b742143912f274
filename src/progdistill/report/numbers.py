"""The numbers the report states, computed once from summary.json so that the tables, the answer
paragraph and the figures agree: medians, ranges and ratios to CE."""

from __future__ import annotations

from typing import Any

BASELINE = "ce"


def ratio_text(value: float, reference: float, value_bound: bool, reference_bound: bool) -> str:
    """value / reference as '0.31×', with '≤' when only the reference is a lower bound, '≥' when only the
    value is, and '–' when both are (no ratio can be stated)."""
    if reference <= 0 or (value_bound and reference_bound):
        return "–"
    mark = "≤ " if reference_bound else "≥ " if value_bound else ""
    return f"{mark}{value / reference:.2f}×"


def samples_ratio(entry: dict[str, Any], base: dict[str, Any] | None) -> str:
    """Median samples to target relative to the baseline's (CE's) median."""
    if base is None:
        return "–"
    return ratio_text(entry["median_samples_to_target"], base["median_samples_to_target"],
                      bool(entry.get("median_samples_is_lower_bound")), bool(base.get("median_samples_is_lower_bound")))


def accuracy_ratio(entry: dict[str, Any], base: dict[str, Any] | None) -> str:
    """Median final accuracy relative to the baseline's, and the difference in points."""
    if base is None:
        return "–"
    a, b = entry["median_final_accuracy"], base["median_final_accuracy"]
    return f"{a / b:.2f}× ({100 * (a - b):+.1f} pts)" if b else "–"


def baseline(summary: dict[str, Any], budget: str) -> dict[str, Any] | None:
    """CE's summary at a budget, if CE ran there."""
    return summary["methods"].get(BASELINE, {}).get("budgets", {}).get(budget)


def budgets(summary: dict[str, Any]) -> list[str]:
    """Every budget of the run (as summary keys), smallest first."""
    return sorted({b for e in summary["methods"].values() for b in e["budgets"]}, key=int)
