"""The whole experiment in one call: the stages of `experiment`, then the report of `report`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .config import Recipe
from .executors import Executor
from .experiment import run_stages


def run_experiment(recipe: Recipe, out: str | Path, progress: bool = True, log: Sequence[str] = (),
                   executor: Executor | None = None) -> dict[str, Any]:
    """Teacher -> phases -> probes -> students -> summary -> report, resuming whatever is already done in
    `out`. Returns the summary (also in out/summary.json); the report is out/report.md and out/report.html.
    `log`: metric backends ("tensorboard", "wandb") besides every model's metrics.jsonl. `executor`: where
    the student group jobs run (default: the recipe's `workers` local processes; see executors.py). Raises
    RecipeError / CheckpointError for a folder or config that cannot be used."""
    from .report import write_report  # matplotlib loads only when a report is written

    return run_stages(recipe, out, progress, log, then=write_report, executor=executor)
