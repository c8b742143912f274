"""The teacher's probes as a stage of a run: which checkpoints are probed, the rows of a probe, and
the probes run beside the teacher while it trains (`EarlyProbes`). `experiment.probe_trajectory` runs
the stage; this module holds what its jobs share and imports nothing above it."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import distributed
from .config import Recipe, validate
from .executors import Executor
from .tasks import build_task
from .trajectory import Phases, Trajectory


def probe_steps(recipe: Recipe, trajectory: Trajectory | Sequence[int], phases: Phases | None) -> list[int]:
    """Every `every`-th checkpoint and the last; with dense_near_drop, all those near the transition
    (`trajectory`: the teacher's trajectory, or the sorted steps of its checkpoints)."""
    saved = list(trajectory.steps if isinstance(trajectory, Trajectory) else trajectory)
    steps = set(saved[::recipe.probe.every]) | {saved[-1]}
    if recipe.probe.dense_near_drop and phases is not None:
        width = phases.drop_end - phases.drop_start
        steps |= {s for s in saved if phases.drop_start - width <= s <= phases.drop_end + width}
    return sorted(steps)


class EarlyProbes:
    """The teacher's probes run on checkpoints as its training writes them, in a worker beside it
    (`start`), where the executor has workers (`Executor.submit`), no probe file exists yet, and a core is
    free: the teacher's torch threads plus a probe job's leave one (parity-mlp-small: the teacher on one
    core, its probes on the other, instead of after it). Only the checkpoints every run probes are done
    early (`probe_steps` without the phases); their rows are those `probe_rows` gives anywhere else.
    `finish` tells the job to stop after its current checkpoint and returns its rows, which
    `probe_trajectory` takes as done."""

    def __init__(self, future: Any = None, stop: Path | None = None) -> None:
        self.future, self.stop = future, stop

    @classmethod
    def start(cls, recipe: Recipe, out: Path, executor: Executor, checkpoints: Sequence[int]) -> "EarlyProbes":
        """Start the job for a run whose teacher will write `checkpoints` (sorted steps) under out/teacher,
        or return an EarlyProbes that does nothing where the conditions above do not hold."""
        enabled = recipe.probe.enabled()
        if not executor.runs_beside or not enabled:
            return cls()
        threads = executor.threads(recipe.threads)
        if (recipe.teacher.path or distributed.is_distributed() or recipe.device != "cpu"
                or torch.get_num_threads() + threads > (os.cpu_count() or 1)
                or any((out / "probes" / f"teacher_{name}.json").is_file() for name in enabled)):
            return cls()
        steps = probe_steps(recipe, list(checkpoints), None)
        stop = Path(tempfile.mkdtemp(prefix="progdistill-")) / "stop"  # outside the run folder
        future = executor.submit(_probe_follow_job, recipe.model_dump(mode="json"), str(out), steps, str(stop),
                                 threads)
        if future is None:
            shutil.rmtree(stop.parent, ignore_errors=True)
            return cls()
        return cls(future, stop)

    def finish(self, wanted: bool = True) -> dict[str, list[dict[str, Any]]]:
        """Stop the job (after the checkpoint it is probing) and return its rows by probe name; {} if none
        ran, if it failed, or if not `wanted` (the teacher's training failed: just stop it)."""
        if self.stop is None:
            return {}
        self.stop.touch()
        try:
            return self.future.result() if wanted else {}
        except Exception:  # computed again by probe_trajectory, which reports a real problem itself
            return {}
        finally:
            shutil.rmtree(self.stop.parent, ignore_errors=True)


def _probe_follow_job(recipe_json: dict[str, Any], out: str, steps: list[int], stop: str,
                      threads: int) -> dict[str, list[dict[str, Any]]]:
    """EarlyProbes' job: every enabled probe on the teacher checkpoints `steps` (of out/teacher) in order,
    each once its meta.json (written last) exists, until the file `stop` appears or its folder is removed."""
    recipe = validate(recipe_json)
    torch.set_num_threads(threads)
    task = build_task(recipe.task, device=recipe.device, folder=Path(out))
    probes, enabled = task.probes(), recipe.probe.enabled()
    root, stopped = Path(out) / "teacher", Path(stop)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in enabled}

    def told_to_stop() -> bool:  # the stop file, or its folder gone (the main process cleans up at once)
        return stopped.exists() or not stopped.parent.is_dir()

    for step in steps:
        while not (root / f"checkpoint-{step}" / "meta.json").is_file():
            if told_to_stop():
                return rows
            time.sleep(0.02)
        if told_to_stop():
            return rows
        trajectory = Trajectory(root)
        for name, options in enabled.items():
            rows[name] += probe_rows(probes[name], options, trajectory, [step], recipe.device)
    return rows


def probe_rows(probe: Callable[..., dict[str, Any]], options: dict[str, Any], trajectory: Trajectory,
               steps: Sequence[int], device: str, progress: bool = False, desc: str = "probe") -> list[dict[str, Any]]:
    """One row per teacher checkpoint in `steps`: its step, its evaluation (loss, accuracy) and
    `probe(model, **options)` as "result"."""
    rows = []
    for step in tqdm(steps, desc=desc, disable=not progress, leave=False):
        model = trajectory.load(step, device)
        rows.append({"step": step, **trajectory.meta(step).get("eval", {}), "result": probe(model, **options)})
    return rows
