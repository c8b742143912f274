"""One training loop for teachers and students.

loss = alpha * CE(student, y) + (1 - alpha) * KD(teacher checkpoint c(t) -> student), where c(t)
comes from a TeacherSchedule (none for a teacher or a CE student). The teacher's outputs come from
`TeacherOutputs` (checkpoint reloaded only when c(t) changes; optionally cached on disk and shared
between students). Every run folder holds its eval curve, which teacher checkpoint supervised each
step, and a resumable state (model + optimizer + schedule) that a kill at any point leaves consistent.
"""

from __future__ import annotations

import bisect
import math
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .batch1 import make_batch1_path
from .config import KDSection, OptimSection, RecipeError, TrainSettings, one_line, validate_section
from .io import CheckpointError, load_tensors, read_json, save_tensors, write_json
from .losses import distillation_terms
from .metric_logging import TrainingLosses, open_loggers
from .models import model_type
from .models.hf import HFModel, as_task_model, describe
from .models.outputs import logits_of
from .precision import autocast
from .schedule import TeacherSchedule
from .tasks.base import Task, selected
from .teacher_outputs import TeacherOutputs
from .trajectory import Trajectory, save_checkpoint


class OptimConfig(OptimSection):
    """The optimizer settings of the Python API: the recipe's `optim` section and its checks
    (`OptimConfig(lr=0)` raises RecipeError 'OptimConfig.lr: Input should be greater than 0')."""

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as e:
            raise RecipeError(one_line(e, "OptimConfig")) from None


class KDConfig(KDSection):
    """The distillation loss settings of the Python API: the recipe's `students.kd` section and its checks."""

    def __init__(self, **settings: Any) -> None:
        try:
            super().__init__(**settings)
        except ValidationError as e:
            raise RecipeError(one_line(e, "KDConfig")) from None


class DivergenceError(ValueError):
    """The held-out loss stopped being finite."""


@dataclass
class TrainConfig:
    """Settings of one training run, checked as `config.TrainSettings` (a RecipeError naming the key);
    `optim` and `kd` may be given as dicts."""

    steps: int
    batch_size: int
    precision: str = "fp32"  # "bf16": forward passes under bfloat16 autocast
    optim: OptimConfig = field(default_factory=OptimConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    eval_every: int = 100
    checkpoint_every: int | None = None  # teachers: save checkpoint-{step} every N steps
    log_checkpoints: int = 0  # extra log-spaced checkpoints before the first regular one
    state_every: int | None = None  # resumable state cadence (default: every eval)
    save_final: bool = True
    batch1: str = "auto"  # the batch-1 path (batch1.py): "auto" where it applies, "numba", "torch", "off"

    def __post_init__(self) -> None:
        checked = validate_section(TrainSettings, {f.name: getattr(self, f.name) for f in fields(self)}, "TrainConfig")
        self.optim, self.kd = checked.optim, checked.kd


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose sgd, adam or adamw")


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate of update `step` (0-based): linear warmup, then constant or cosine to 0."""
    warm = int(round(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown lr schedule {cfg.schedule!r}; choose constant or cosine")


def checkpoint_steps(cfg: TrainConfig) -> set[int]:
    """Steps at which a teacher saves checkpoints: 0, every N, log-spaced early ones, the last."""
    if not cfg.checkpoint_every:
        return set()
    steps = set(range(0, cfg.steps + 1, cfg.checkpoint_every)) | {cfg.steps}
    if cfg.log_checkpoints:
        steps |= {int(s) for s in np.unique(np.geomspace(1, cfg.checkpoint_every, cfg.log_checkpoints + 1).round())}
    return {s for s in steps if s <= cfg.steps}


def next_boundary(step: int, cfg: TrainConfig, checkpoints: list[int], state_every: int) -> int:
    """The first step after `step` at which training evaluates, saves a checkpoint or its state, or ends
    (`checkpoints`: the sorted checkpoint steps). An early stop (`stop_at`) is not one: on the batch-1 path a
    run stopped early stops at the first of these at or after it, so that it resumes bit-identically."""
    nxt = min(cfg.steps, (step // cfg.eval_every + 1) * cfg.eval_every, (step // state_every + 1) * state_every)
    i = bisect.bisect_right(checkpoints, step)
    return min(nxt, checkpoints[i]) if i < len(checkpoints) else nxt


def _save_optimizer(path: Path, opt: torch.optim.Optimizer | dict[str, Any]) -> dict[str, Any]:
    """Write an optimizer's tensors to `path` (safetensors); returns its other entries (JSON)."""
    state = opt.state_dict() if isinstance(opt, torch.optim.Optimizer) else opt
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    save_tensors(path, tensors or {"_empty": torch.zeros(0)})
    return {"scalars": scalars, "param_groups": state["param_groups"]}


def _read_optimizer(path: Path, info: dict[str, Any], device: str | torch.device = "cpu") -> dict[str, Any]:
    """The optimizer state dict written by `_save_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in load_tensors(path, device).items():
        if name == "_empty":
            continue
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


class Run:
    """The files of one model's training in its folder `out`: the held-out curve, which teacher checkpoint
    supervised each step, the resumable state, the checkpoints, and the final files. `train` and the
    batched group loop (`group.train_group`) keep every model's folder through this class, so a model's
    files are the same whichever loop trained it."""

    def __init__(self, out: str | Path, task: Task, cfg: TrainConfig, meta: dict[str, Any],
                 schedule: TeacherSchedule | None = None, desc: str = "train", log: Sequence[str] = (),
                 device: str | torch.device = "cpu") -> None:
        self.out, self.task, self.cfg, self.meta = Path(out), task, cfg, meta
        self.log, self.loggers = tuple(log), []
        self.losses = TrainingLosses(torch.device(device))  # since the last evaluation, for metrics.jsonl
        self.schedule = schedule or TeacherSchedule(None)
        self.desc = desc
        self.state_dir = self.out / "state"
        self.ckpt_steps = checkpoint_steps(cfg)
        self.state_every = cfg.state_every or cfg.eval_every
        self.record: dict[str, Any] = {"curve": [], "supervision": []}
        self.writes = distributed.writes()  # under torchrun only rank 0 writes files

    def resume(self, device: str | torch.device = "cpu") -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        """The saved state (step, model tensors, optimizer state dict), restoring the schedule and the
        record; None if there is none. Raises CheckpointError for unreadable files."""
        if not (self.state_dir / "state.json").is_file():
            return None
        saved = read_state(self.state_dir)
        files = saved.get("files", {"model": "model.safetensors", "optimizer": "optimizer.safetensors"})
        try:
            model = load_tensors(self.state_dir / files["model"], device)
            optimizer = _read_optimizer(self.state_dir / files["optimizer"], saved["optimizer"], device)
            if "rng" in files:  # dropout and any other draw from the global generators continue where they were
                _set_rng_state(load_tensors(self.state_dir / files["rng"]))
        except CheckpointError as e:
            raise CheckpointError(f"{e}; {restart_hint(self.state_dir)}") from None
        self.schedule.load_state_dict(saved["schedule"])
        self.record = saved["record"]
        if "losses" in saved:
            self.losses.load_state_dict(saved["losses"])
        return saved["step"], model, optimizer

    def open_loggers(self, start: int) -> None:
        """Open metrics.jsonl (lines past `start` dropped) and the `log` backends."""
        if not self.writes:
            return
        self.loggers = open_loggers(self.out, self.log, start, self.desc)

    def close(self) -> None:
        """Close the metric loggers."""
        for logger in self.loggers:
            logger.close()
        self.loggers = []

    def lr(self, step: int) -> float:
        """The learning rate of `step`."""
        if self.cfg.optim.schedule != "constant" or self.cfg.optim.warmup:
            return lr_at(step, self.cfg.steps, self.cfg.optim)
        return self.cfg.optim.lr

    def supervise(self, step: int) -> int | None:
        """The teacher checkpoint of `step` (None: no teacher), recorded in the supervision segments."""
        ckpt = self.schedule.checkpoint(step)
        segments = self.record["supervision"]
        if not segments or segments[-1]["checkpoint"] != ckpt:
            segments.append({"start": step, "end": step + 1, "checkpoint": ckpt})
        else:
            segments[-1]["end"] = step + 1
        return ckpt

    def needs_eval(self, done: int) -> bool:
        """Whether the model is evaluated after `done` steps."""
        return done % self.cfg.eval_every == 0 or done == self.cfg.steps or done in self.ckpt_steps

    def add_eval(self, step: int, metrics: dict[str, float]) -> dict[str, Any]:
        """Record held-out `metrics` after `step` steps (and show them to the schedule); a non-finite loss
        raises DivergenceError."""
        point = {"step": step, "samples": step * self.task.samples_per_step(self.cfg.batch_size), **metrics}
        if not math.isfinite(point["loss"]):
            raise DivergenceError(f"{self.desc}: held-out loss is {point['loss']} at step {step}: training diverged "
                                  "(lower optim.lr, or set optim.grad_clip)")
        point["teacher"] = self.schedule.checkpoint(max(step - 1, 0))
        self.record["curve"].append(point)
        self.schedule.observe(step, point)
        line = {"samples": point["samples"], **self.losses.means(), "teacher/checkpoint_step": point["teacher"],
                "eval/loss": point["loss"], "eval/accuracy": point["accuracy"], "lr": self.lr(max(step - 1, 0))}
        for logger in self.loggers:
            logger.log_dict(step, line)
        return point

    def evaluate(self, model: nn.Module, step: int) -> dict[str, Any]:
        """Evaluate `model` on the task's held-out set and record it (`add_eval`)."""
        device = next(model.parameters()).device
        with autocast(device, self.cfg.precision):
            metrics = self.task.evaluate(model)
        return self.add_eval(step, metrics)

    def save_state(self, step: int, model_state: dict[str, torch.Tensor],
                   optimizer: torch.optim.Optimizer | dict[str, Any]) -> None:
        """Save a resumable state after `step` steps."""
        if not self.writes:
            return
        # Weights go to files named by step; state.json, written last, commits them. A kill between the
        # writes leaves the previous state.json pointing at the previous, complete files.
        state_dir = self.state_dir
        files = {"model": f"model-{step}.safetensors", "optimizer": f"optimizer-{step}.safetensors",
                 "rng": f"rng-{step}.safetensors"}
        save_tensors(state_dir / files["model"], model_state)
        info = _save_optimizer(state_dir / files["optimizer"], optimizer)
        save_tensors(state_dir / files["rng"], _rng_state())
        write_json(state_dir / "state.json", {"step": step, "files": files, "optimizer": info,
                                              "schedule": self.schedule.state_dict(), "record": self.record,
                                              "losses": self.losses.state_dict()})
        for stale in state_dir.glob("*.safetensors"):
            if stale.name not in files.values():
                stale.unlink()

    def save_checkpoint(self, step: int, model: nn.Module, point: dict[str, Any] | None) -> None:
        """Write checkpoint-{step} (evaluating the model first unless `point` holds its metrics)."""
        if not self.writes:
            return
        if point is None:
            with autocast(next(model.parameters()).device, self.cfg.precision):
                point = {"step": step, **self.task.evaluate(model)}
        save_checkpoint(self.out / f"checkpoint-{step}", model, {
            **self.meta, "step": step, "samples": step * self.task.samples_per_step(self.cfg.batch_size),
            "eval": {"loss": point["loss"], "accuracy": point["accuracy"]},
        })

    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Write curve.json, supervision.json and the final checkpoint, drop the state; returns the record."""
        self.close()
        if not self.writes:
            return self.record
        write_json(self.out / "supervision.json", self.record["supervision"])
        if self.cfg.save_final and self.cfg.steps not in self.ckpt_steps:
            self.save_checkpoint(self.cfg.steps, model, self.record["curve"][-1])
        write_json(self.out / "curve.json", self.record["curve"])  # last: a folder with curve.json holds a finished run
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        return self.record


def restart_hint(state_dir: Path) -> str:
    """How to recover from a model's unreadable resumable state: without its `state/` folder the model
    trains again from step 0 (same seed, same data: the same results; its checkpoints are written anew)."""
    return f"delete {state_dir} to train this model again from step 0 (its checkpoints are written anew)"


def read_state(state_dir: str | Path) -> dict[str, Any]:
    """A model's state.json in `state_dir`; CheckpointError, saying how to restart the model, if it is
    unreadable or not a JSON object."""
    state_dir = Path(state_dir)
    try:
        saved = read_json(state_dir / "state.json")
    except CheckpointError as e:
        raise CheckpointError(f"{e}; {restart_hint(state_dir)}") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{state_dir / 'state.json'}: not a training state (a JSON object); "
                              f"{restart_hint(state_dir)}")
    return saved


def _rng_state() -> dict[str, torch.Tensor]:
    """The global random generators' states (CPU, and every CUDA device in use), as uint8 tensors."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    cuda = [state[k].cpu() for k in sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def train(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    out: str | Path,
    meta: dict[str, Any],
    schedule: TeacherSchedule | None = None,
    teacher: Trajectory | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    desc: str = "train",
    teacher_cache: str | Path | None = None,
    log: Sequence[str] = (),
) -> dict[str, Any]:
    """Train `model` on `task`, resuming from `out/state` if present. Returns the run's record.

    `model` may also be a bare `transformers` model (it is wrapped to take the task's inputs; its outputs are
    read by `logits_of`). `meta` is stored in every checkpoint; its 'model' entry (the resolved architecture: a
    built-in `type`, `hf`, or `{"type": "package.module:Class", **keywords}` for your own model) is what lets
    `load_checkpoint` / `Trajectory.load` rebuild it, so a teacher whose checkpoints feed students needs it.
    `stop_at` ends the run early after that step with its state saved, as an interruption would.
    `teacher_cache`: a folder where the teacher's outputs on this data stream are cached (see
    `TeacherOutputs`); share it only between runs with the same task, data seed and batch size.
    `log`: metric backends besides `out/metrics.jsonl` (always written): "tensorboard", "wandb" (offline).
    Under torchrun (several ranks) the model trains data-parallel (`distributed`: each rank a slice of the
    global batch, DDP-averaged gradients, only rank 0 writes; not on the batch-1 path).
    Raises ValueError for a meta['model'] of unknown type, a missing logging extra, a batch size the ranks
    cannot split; DivergenceError.
    """
    out = Path(out)
    model = as_task_model(model, task.model_io())
    if isinstance(model, HFModel) and "model" not in meta:
        meta = {**meta, "model": describe(model)}
    if "model" in meta:
        model_type(meta["model"].get("type"))  # an unknown type fails now, not when a student loads it
    elif cfg.checkpoint_every:
        raise ValueError(f"{desc}: meta needs a 'model' entry (the architecture, e.g. {{'type': 'package.module:Class', "
                         "**keywords}}) so that its checkpoints can be rebuilt")
    device = next(model.parameters()).device
    if distributed.is_distributed():
        distributed.check_batch_size(cfg.batch_size, f"{desc}: batch_size")
        if teacher is not None:
            raise ValueError(f"{desc}: data-parallel training under torchrun is for models without a teacher (teachers)")
        distributed.setup(str(device))
    forward = distributed.wrap(model)  # the model itself outside torchrun
    run = Run(out, task, cfg, meta, schedule, desc, log=log, device=device)
    schedule = run.schedule
    opt = make_optimizer(model, cfg.optim)
    teachers = TeacherOutputs(teacher, task, cfg.batch_size, device, labels_only=cfg.kd.tau == 0,
                              cache=teacher_cache, precision=cfg.precision)

    start = 0
    saved = run.resume(device)
    if saved is not None:
        start, weights, optimizer = saved
        model.load_state_dict(weights)
        opt.load_state_dict(optimizer)
    run.open_loggers(start)

    if start == 0:
        point = run.evaluate(model, 0)
        if 0 in run.ckpt_steps:
            run.save_checkpoint(0, model, point)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    model.train()
    # The batch-1 path (batch1.py) runs the steps up to the next evaluation / checkpoint / state step at once.
    fast = make_batch1_path(model, task, cfg, lambda s: lr_at(s, cfg.steps, cfg.optim), teachers, start) \
        if start < cfg.steps and not distributed.is_distributed() else None
    boundaries = sorted(run.ckpt_steps)
    step = start
    while step < cfg.steps:
        if fast is not None:
            done = fast.run(step, next_boundary(step, cfg, boundaries, run.state_every), task, schedule,
                            run.record["supervision"], run.losses)
        else:
            done = step + 1
            ckpt = run.supervise(step)
            if cfg.optim.schedule != "constant" or cfg.optim.warmup:
                lr = lr_at(step, cfg.steps, cfg.optim)
                for group in opt.param_groups:
                    group["lr"] = lr
            batch = distributed.shard(task.train_batch(step, cfg.batch_size))  # this rank's slice under torchrun
            with autocast(device, cfg.precision):
                logits, targets = selected(logits_of(forward(batch.inputs)).float(), batch.targets)
            teacher_logits = teachers.get(ckpt, step, batch)
            loss, kd = distillation_terms(logits, targets, teacher_logits, cfg.kd.alpha, cfg.kd.tau, cfg.kd.kind,
                                          cfg.kd.scale_tau2)
            run.losses.add(loss, kd)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            opt.step()
        point = None
        if run.needs_eval(done):
            point = run.evaluate(model, done)
            bar.set_postfix(loss=f"{point['loss']:.3f}", acc=f"{point['accuracy']:.3f}", refresh=False)
        if done in run.ckpt_steps:
            run.save_checkpoint(done, model, point)
        bar.update(done - step)
        if stop_at is not None and done >= stop_at and done < cfg.steps:
            run.save_state(done, model.state_dict(), opt)
            bar.close()
            run.close()
            return run.record
        if done % run.state_every == 0 and done < cfg.steps:
            run.save_state(done, model.state_dict(), opt)
        step = done
    bar.close()
    return run.finish(model)
