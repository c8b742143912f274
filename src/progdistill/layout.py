"""Run-folder layout and summary formatting shared by the pipeline, the report and the command line.

A run folder holds `teacher/`, `probes/`, `students/<method>/budget-<steps>/seed-<s>/`, `summary.json`,
`report.md`, `report.html` and `plots/`. This module sits below `experiment` and `report`, so both read
the same layout without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_run_json(out: str | Path) -> dict[str, Any]:
    """A run folder's run.json: an object whose `config` is a mapping. Raises CheckpointError naming the
    file for a missing, truncated or differently shaped one (`[]`, `{}`, a config that is not a mapping)."""
    from .io import CheckpointError, read_json

    path = Path(out) / "run.json"
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("config"), dict):
        raise CheckpointError(f"{path}: not a progdistill run.json (expected an object with a 'config' mapping); "
                              "choose another folder, or delete this one to start afresh")
    return content


def student_folder(out: str | Path, label: str, budget: int, seed: int) -> Path:
    """The folder of one student: out/students/<label>/budget-<budget>/seed-<seed>."""
    return Path(out) / "students" / label / f"budget-{budget}" / f"seed-{seed}"


def samples_to_target_text(entry: dict[str, Any]) -> str:
    """The median samples-to-target of a method summary, as '≥ N' where it is only a lower bound
    (at most half the seeds reached the target, so the median counts a whole budget)."""
    return ("≥ " if entry.get("median_samples_is_lower_bound") else "") + f"{entry['median_samples_to_target']:,}"
