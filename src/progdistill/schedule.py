"""Teacher schedules: which teacher checkpoint supervises each student step (SPEC §2).

`progressive_checkpoint` is the paper's rule as one pure function; `TeacherSchedule` objects wrap
each method, and `observe` feeds them the student's held-out metrics (adaptive and auto use them).
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from .trajectory import Phases

PHASE_REFERENCES = ("before", "drop_start", "middle", "drop_end", "after")


def progressive_checkpoint(step: int, saved: list[int], speed: float = 1.0, refresh: int = 1,
                           start: int = 0) -> int:
    """c(t) = first saved checkpoint at or after start + s*R*(1 + floor(t/R)); clamp to the final one."""
    target = round(start + speed * refresh * (1 + step // refresh), 6)  # no skip on float error
    i = bisect.bisect_left(saved, target)
    return saved[i] if i < len(saved) else saved[-1]


def fitted_speed(saved: list[int], start: int, refresh: int, budget: int, reach: float = 1.0) -> float:
    """The speed at which `progressive_checkpoint` reaches the final checkpoint in the refresh interval
    holding step ceil(reach * budget) - 1 (earlier only where the saved checkpoints are sparse)."""
    intervals = max(1, math.ceil(reach * budget / refresh))
    return max(saved[-1] - start, 1) / (refresh * intervals)


def resolve_checkpoint(ref: int | str, saved: list[int], phases: Phases | None, key: str = "checkpoint") -> int:
    """A checkpoint given as a step (the nearest saved one) or relative to the teacher's phases:
    before (last saved before the drop), drop_start, middle, drop_end, after (first saved after it).
    Raises ValueError naming the method's `key` that holds `ref` (checkpoint, start)."""
    if isinstance(ref, int):
        if ref > saved[-1]:
            raise ValueError(f"{key} {ref} is past the teacher's last saved step ({saved[-1]})")
        return _nearest(ref, saved)
    if ref == "final":
        return saved[-1]
    if phases is None:
        raise ValueError(f"{key} {ref!r} needs the teacher's phases, which were not detected")
    if ref == "before":
        earlier = [s for s in saved if s < phases.drop_start]
        return earlier[-1] if earlier else saved[0]
    if ref == "after":
        later = [s for s in saved if s > phases.drop_end]
        return later[0] if later else saved[-1]
    if ref in ("drop_start", "middle", "drop_end"):
        return _nearest(getattr(phases, ref), saved)
    raise ValueError(f"unknown {key} reference {ref!r}; use a step or one of {PHASE_REFERENCES}")


def _nearest(step: int, saved: list[int]) -> int:
    return min(saved, key=lambda s: (abs(s - step), s))


class TeacherSchedule:
    """Base schedule: a fixed checkpoint (None = no teacher, plain CE)."""

    def __init__(self, checkpoint: int | None = None) -> None:
        self.fixed = checkpoint

    def checkpoint(self, step: int) -> int | None:
        return self.fixed

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        """Held-out metrics of the student after `step`; most schedules ignore them."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Progressive(TeacherSchedule):
    def __init__(self, saved: list[int], speed: float, refresh: int, start: int = 0) -> None:
        super().__init__()
        self.saved, self.speed, self.refresh, self.start = saved, speed, refresh, start

    def checkpoint(self, step: int) -> int:
        return progressive_checkpoint(step, self.saved, self.speed, self.refresh, self.start)


class TwoShot(TeacherSchedule):
    """Checkpoint C for the first `switch` steps, then the final checkpoint."""

    def __init__(self, intermediate: int, final: int, switch: int) -> None:
        super().__init__()
        self.intermediate, self.final, self.switch = intermediate, final, switch

    def checkpoint(self, step: int) -> int:
        return self.intermediate if step < self.switch else self.final


class _PlateauTracker:
    """Counts evaluations without an accuracy gain of more than min_delta."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.stale = float("-inf"), 0

    def plateaued(self, accuracy: float) -> bool:
        if accuracy > self.best + self.min_delta:
            self.best, self.stale = accuracy, 0
        else:
            self.stale += 1
        return self.stale >= self.patience

    def reset(self) -> None:
        self.best, self.stale = float("-inf"), 0


class Adaptive(TeacherSchedule):
    """Start at a checkpoint; advance to the next saved one when held-out accuracy plateaus."""

    def __init__(self, saved: list[int], start: int, patience: int, min_delta: float) -> None:
        super().__init__()
        self.saved = saved
        self.index = saved.index(start)
        self.tracker = _PlateauTracker(patience, min_delta)

    def checkpoint(self, step: int) -> int:
        return self.saved[self.index]

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        if self.index < len(self.saved) - 1 and self.tracker.plateaued(metrics["accuracy"]):
            self.index += 1
            self.tracker.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"index": self.index, "best": self.tracker.best, "stale": self.tracker.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.index, self.tracker.best, self.tracker.stale = state["index"], state["best"], state["stale"]


class Auto(TeacherSchedule):
    """The checkpoint in the middle of the teacher's phase transition, then the final teacher.

    Switches at step `switch` if given. Otherwise it switches once the student's held-out accuracy
    comes within `tolerance` of that checkpoint's own accuracy, or once it plateaus (`patience`
    evaluations without a gain of `min_delta`) after covering half the way from its starting accuracy
    to the checkpoint's; and at step `latest` in any case.
    """

    def __init__(self, intermediate: int, final: int, teacher_accuracy: float, switch: int | None,
                 latest: int, tolerance: float, patience: int, min_delta: float) -> None:
        super().__init__()
        self.intermediate, self.final, self.switch, self.latest = intermediate, final, switch, latest
        self.teacher_accuracy, self.tolerance = teacher_accuracy, tolerance
        self.tracker = _PlateauTracker(patience, min_delta)
        self.initial: float | None = None
        self.switched_at: int | None = None

    def checkpoint(self, step: int) -> int:
        if self.switch is not None:
            return self.intermediate if step < self.switch else self.final
        if self.switched_at is not None or step >= self.latest:
            return self.final
        return self.intermediate

    def observe(self, step: int, metrics: dict[str, float]) -> None:
        if self.switch is not None or self.switched_at is not None:
            return
        if step >= self.latest:
            self.switched_at = self.latest
            return
        accuracy = metrics["accuracy"]
        if self.initial is None:
            self.initial = accuracy
            return
        caught_up = accuracy >= self.teacher_accuracy - self.tolerance
        halfway = accuracy >= (self.initial + self.teacher_accuracy) / 2
        if self.tracker.plateaued(accuracy) and halfway or caught_up:
            self.switched_at = step

    def state_dict(self) -> dict[str, Any]:
        return {"switched_at": self.switched_at, "initial": self.initial, "best": self.tracker.best,
                "stale": self.tracker.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.switched_at, self.initial = state["switched_at"], state["initial"]
        self.tracker.best, self.tracker.stale = state["best"], state["stale"]


def make_schedule(method: dict[str, Any], saved: list[int] | None, phases: Phases | None,
                  teacher_curve: list[dict[str, Any]] | None = None, budget: int | None = None) -> TeacherSchedule:
    """Build the schedule of a method entry ({'name': ..., options}, or a recipe's method) over saved
    checkpoint steps; `budget` is the student's number of steps (auto's latest switch is a fraction of it).

    The entry is checked exactly as in a recipe: RecipeError (a ValueError) names an unknown method or
    option (`{"name": "progressive", "sped": 2}` -> 'method.progressive.sped: unknown key'); ValueError
    if it cannot be applied to these checkpoints."""
    from .config import METHOD, validate_section

    method = validate_section(METHOD, method, "method").model_dump()
    name = method["name"]
    if name == "ce":
        return TeacherSchedule(None)
    if not saved:
        raise ValueError(f"method {name!r} needs a teacher trajectory with saved checkpoints")
    final = saved[-1]
    if name == "one-shot":
        return TeacherSchedule(final)
    if name == "progressive":
        start = method.get("start", 0)
        start_step = 0 if start == 0 else resolve_checkpoint(start, saved, phases, "start")
        refresh = method.get("refresh") or _checkpoint_interval(saved)
        speed = method.get("speed", 1.0)
        if speed == "fit":
            if not budget:
                raise ValueError("progressive with speed 'fit' needs the student's budget")
            speed = fitted_speed(saved, start_step, refresh, budget, method.get("reach", 1.0))
        return Progressive(saved, speed, refresh, start_step)
    if name == "two-shot":
        return TwoShot(resolve_checkpoint(method["checkpoint"], saved, phases), final, method["switch"])
    if name == "adaptive":
        start = resolve_checkpoint(method.get("start", saved[0]), saved, phases, "start")
        return Adaptive(saved, start, method.get("patience", 3), method.get("min_delta", 0.005))
    if name == "auto":
        if phases is None:
            raise ValueError("method 'auto' needs the teacher's phases, which were not detected")
        mid = resolve_checkpoint("middle", saved, phases)
        acc = _accuracy_at(teacher_curve or [], mid)
        latest = int(method.get("latest", 0.5) * (budget or 0)) if budget else 2**62
        return Auto(mid, final, acc, method.get("switch"), latest, method.get("tolerance", 0.02),
                    method.get("patience", 3), method.get("min_delta", 0.005))
    raise ValueError(f"unknown method {name!r}")


def _checkpoint_interval(saved: list[int]) -> int:
    return max(1, saved[-1] - saved[-2]) if len(saved) > 1 else max(1, saved[-1])


def _accuracy_at(curve: list[dict[str, Any]], step: int) -> float:
    points = [p for p in curve if "accuracy" in p]
    if not points:
        return 1.0
    return min(points, key=lambda p: abs(p["step"] - step))["accuracy"]
