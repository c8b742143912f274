"""One training loop for teachers and students.

loss = alpha * CE(student, y) + (1 - alpha) * KD(teacher checkpoint c(t) -> student), where c(t)
comes from a TeacherSchedule (none for a teacher or a CE student). The teacher's outputs come from
`TeacherOutputs` (checkpoint reloaded only when c(t) changes; optionally cached on disk and shared
between students). Every run folder holds its eval curve, which teacher checkpoint supervised each
step, and a resumable state (model + optimizer + schedule) that a kill at any point leaves consistent.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .io import load_tensors, read_json, save_tensors, write_json
from .losses import distillation_loss
from .precision import autocast
from .schedule import TeacherSchedule
from .tasks.base import Task, selected
from .teacher_outputs import TeacherOutputs
from .trajectory import Trajectory, save_checkpoint


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 0.0
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"  # or "cosine"
    warmup: float = 0.0  # fraction of the steps
    grad_clip: float | None = None


class DivergenceError(ValueError):
    """The held-out loss stopped being finite."""


@dataclass
class KDConfig:
    alpha: float = 0.0
    tau: float = 0.0
    kind: str = "forward"
    scale_tau2: bool = False


@dataclass
class TrainConfig:
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
                 schedule: TeacherSchedule | None = None, desc: str = "train") -> None:
        self.out, self.task, self.cfg, self.meta = Path(out), task, cfg, meta
        self.schedule = schedule or TeacherSchedule(None)
        self.desc = desc
        self.state_dir = self.out / "state"
        self.ckpt_steps = checkpoint_steps(cfg)
        self.state_every = cfg.state_every or cfg.eval_every
        self.record: dict[str, Any] = {"curve": [], "supervision": []}

    def resume(self, device: str | torch.device = "cpu") -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        """The saved state (step, model tensors, optimizer state dict), restoring the schedule and the
        record; None if there is none. Raises CheckpointError for unreadable files."""
        if not (self.state_dir / "state.json").is_file():
            return None
        saved = read_json(self.state_dir / "state.json")
        files = saved.get("files", {"model": "model.safetensors", "optimizer": "optimizer.safetensors"})
        model = load_tensors(self.state_dir / files["model"], device)
        optimizer = _read_optimizer(self.state_dir / files["optimizer"], saved["optimizer"], device)
        self.schedule.load_state_dict(saved["schedule"])
        self.record = saved["record"]
        return saved["step"], model, optimizer

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
        # Weights go to files named by step; state.json, written last, commits them. A kill between the
        # writes leaves the previous state.json pointing at the previous, complete files.
        state_dir = self.state_dir
        files = {"model": f"model-{step}.safetensors", "optimizer": f"optimizer-{step}.safetensors"}
        save_tensors(state_dir / files["model"], model_state)
        info = _save_optimizer(state_dir / files["optimizer"], optimizer)
        write_json(state_dir / "state.json", {"step": step, "files": files, "optimizer": info,
                                              "schedule": self.schedule.state_dict(), "record": self.record})
        for stale in state_dir.glob("*.safetensors"):
            if stale.name not in files.values():
                stale.unlink()

    def save_checkpoint(self, step: int, model: nn.Module, point: dict[str, Any] | None) -> None:
        """Write checkpoint-{step} (evaluating the model first unless `point` holds its metrics)."""
        if point is None:
            with autocast(next(model.parameters()).device, self.cfg.precision):
                point = {"step": step, **self.task.evaluate(model)}
        save_checkpoint(self.out / f"checkpoint-{step}", model, {
            **self.meta, "step": step, "samples": step * self.task.samples_per_step(self.cfg.batch_size),
            "eval": {"loss": point["loss"], "accuracy": point["accuracy"]},
        })

    def finish(self, model: nn.Module) -> dict[str, Any]:
        """Write curve.json, supervision.json and the final checkpoint, drop the state; returns the record."""
        write_json(self.out / "curve.json", self.record["curve"])
        write_json(self.out / "supervision.json", self.record["supervision"])
        if self.cfg.save_final and self.cfg.steps not in self.ckpt_steps:
            self.save_checkpoint(self.cfg.steps, model, self.record["curve"][-1])
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        return self.record


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
) -> dict[str, Any]:
    """Train `model` on `task`, resuming from `out/state` if present. Returns the run's record.

    `meta` is stored in every checkpoint (must hold the resolved architecture under 'model').
    `stop_at` ends the run early after that step with its state saved, as an interruption would.
    `teacher_cache`: a folder where the teacher's outputs on this data stream are cached (see
    `TeacherOutputs`); share it only between runs with the same task, data seed and batch size.
    """
    run = Run(out, task, cfg, meta, schedule, desc)
    schedule = run.schedule
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg.optim)
    teachers = TeacherOutputs(teacher, task, cfg.batch_size, device, labels_only=cfg.kd.tau == 0,
                              cache=teacher_cache, precision=cfg.precision)

    start = 0
    saved = run.resume(device)
    if saved is not None:
        start, weights, optimizer = saved
        model.load_state_dict(weights)
        opt.load_state_dict(optimizer)

    if start == 0:
        point = run.evaluate(model, 0)
        if 0 in run.ckpt_steps:
            run.save_checkpoint(0, model, point)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    model.train()
    for step in range(start, cfg.steps):
        ckpt = run.supervise(step)
        if cfg.optim.schedule != "constant" or cfg.optim.warmup:
            lr = lr_at(step, cfg.steps, cfg.optim)
            for group in opt.param_groups:
                group["lr"] = lr
        batch = task.train_batch(step, cfg.batch_size)
        with autocast(device, cfg.precision):
            logits, targets = selected(model(batch.inputs).float(), batch.targets)
        teacher_logits = teachers.get(ckpt, step, batch)
        loss = distillation_loss(logits, targets, teacher_logits, cfg.kd.alpha, cfg.kd.tau, cfg.kd.kind,
                                 cfg.kd.scale_tau2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
        done = step + 1
        point = None
        if run.needs_eval(done):
            point = run.evaluate(model, done)
            bar.set_postfix(loss=f"{point['loss']:.3f}", acc=f"{point['accuracy']:.3f}", refresh=False)
        if done in run.ckpt_steps:
            run.save_checkpoint(done, model, point)
        bar.update(1)
        if stop_at is not None and done >= stop_at and done < cfg.steps:
            run.save_state(done, model.state_dict(), opt)
            bar.close()
            return run.record
        if done % run.state_every == 0 and done < cfg.steps:
            run.save_state(done, model.state_dict(), opt)
    bar.close()
    return run.finish(model)
