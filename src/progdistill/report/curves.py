"""Student curves of a run folder as arrays: median and min–max over seeds, the statistics the tables use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import read_json
from ..layout import student_folder


@dataclass
class SeedCurves:
    """Held-out curves of one method at one budget: `samples` [T] and `accuracy`, `loss` [seeds, T]."""

    samples: np.ndarray
    accuracy: np.ndarray
    loss: np.ndarray

    @property
    def median(self) -> np.ndarray:
        return np.median(self.accuracy, axis=0)


def student_curves(out: Path, summary: dict[str, Any]) -> dict[tuple[str, int], SeedCurves]:
    """(label, budget) -> curves of every finished seed, cut to the shortest curve among them."""
    result = {}
    for label, entry in summary["methods"].items():
        for budget, b in entry["budgets"].items():
            curves = [read_json(student_folder(out, label, int(budget), int(seed)) / "curve.json")
                      for seed in b["seeds"]]
            n = min(len(c) for c in curves)
            result[(label, int(budget))] = SeedCurves(
                np.array([p["samples"] for p in curves[0][:n]], dtype=float),
                np.array([[p["accuracy"] for p in c[:n]] for c in curves], dtype=float),
                np.array([[p["loss"] for p in c[:n]] for c in curves], dtype=float))
    return result
