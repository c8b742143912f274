"""progdistill: progressive knowledge distillation from a teacher's checkpoint trajectory.

The names below are imported on first use (PEP 562), so that `import progdistill` and the command line
start without loading torch until they need it."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "Recipe": "config", "RecipeError": "config", "load_recipe": "config", "recipe_names": "config",
    "train_student": "experiment", "train_teacher": "experiment", "run_experiment": "pipeline",
    "CheckpointError": "io", "distillation_loss": "losses", "kd_loss": "losses", "build_model": "models",
    "resolve_architecture": "models", "make_schedule": "schedule", "progressive_checkpoint": "schedule",
    "IGNORE": "tasks", "Batch": "tasks", "DatasetTask": "tasks", "ParityTask": "tasks", "Task": "tasks",
    "TensorTask": "tasks", "build_task": "tasks", "KDConfig": "trainer", "OptimConfig": "trainer",
    "TrainConfig": "trainer", "train": "trainer", "Trajectory": "trajectory", "detect_phases": "trajectory",
    "load_checkpoint": "trajectory", "save_checkpoint": "trajectory",
}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
