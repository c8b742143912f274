"""The whole experiment in one call: the stages of `experiment`, then the report of `report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import Recipe
from .experiment import run_stages


def run_experiment(recipe: Recipe, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Teacher -> phases -> probes -> students -> summary -> report, resuming whatever is already done in
    `out`. Returns the summary (also in out/summary.json); the report is out/report.md and out/report.html.
    Raises RecipeError / CheckpointError for a folder or config that cannot be used."""
    from .report import write_report  # matplotlib loads only when a report is written

    summary = run_stages(recipe, out, progress)
    write_report(recipe, Path(out), summary)
    return summary
