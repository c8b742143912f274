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
from .models.hf import HFModel, as_task_model, describe
from .models.outputs import logits_of
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


def _save_optimizer(path: Path, opt: torch.optim.Optimizer) -> dict[str, Any]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    save_tensors(path, tensors or {"_empty": torch.zeros(0)})
    return {"scalars": scalars, "param_groups": state["param_groups"]}


def _load_optimizer(path: Path, opt: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in load_tensors(path).items():
        if name == "_empty":
            continue
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in info["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The global random state that dropout draws from (CPU, and the CUDA device's)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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

    `model` may also be a bare `transformers` model (it is wrapped to take the task's inputs; its outputs are
    read by `logits_of`). `meta` is stored in every checkpoint (must hold the resolved architecture under 'model').
    `stop_at` ends the run early after that step with its state saved, as an interruption would.
    `teacher_cache`: a folder where the teacher's outputs on this data stream are cached (see
    `TeacherOutputs`); share it only between runs with the same task, data seed and batch size.
    """
    out = Path(out)
    model = as_task_model(model, task.model_io())
    if isinstance(model, HFModel) and "model" not in meta:
        meta = {**meta, "model": describe(model)}
    schedule = schedule or TeacherSchedule(None)
    device = next(model.parameters()).device
    opt = make_optimizer(model, cfg.optim)
    ckpt_steps = checkpoint_steps(cfg)
    state_every = cfg.state_every or cfg.eval_every
    teachers = TeacherOutputs(teacher, task, cfg.batch_size, device, labels_only=cfg.kd.tau == 0,
                              cache=teacher_cache, precision=cfg.precision)

    record: dict[str, Any] = {"curve": [], "supervision": []}
    start = 0
    state_dir = out / "state"
    if (state_dir / "state.json").is_file():
        saved = read_json(state_dir / "state.json")
        files = saved.get("files", {"model": "model.safetensors", "optimizer": "optimizer.safetensors"})
        model.load_state_dict(load_tensors(state_dir / files["model"], device))
        _load_optimizer(state_dir / files["optimizer"], opt, saved["optimizer"])
        if "rng" in files:  # the random stream of dropout, as it was when the state was saved
            _set_rng(load_tensors(state_dir / files["rng"]), device)
        schedule.load_state_dict(saved["schedule"])
        record, start = saved["record"], saved["step"]

    def evaluate(step: int) -> dict[str, Any]:
        with autocast(device, cfg.precision):
            metrics = task.evaluate(model)
        point = {"step": step, "samples": step * task.samples_per_step(cfg.batch_size), **metrics}
        if not math.isfinite(point["loss"]):
            raise DivergenceError(f"{desc}: held-out loss is {point['loss']} at step {step}: training diverged "
                                  "(lower optim.lr, or set optim.grad_clip)")
        point["teacher"] = schedule.checkpoint(max(step - 1, 0))
        record["curve"].append(point)
        schedule.observe(step, point)
        return point

    def save_state(step: int) -> None:
        # Weights go to files named by step; state.json, written last, commits them. A kill between the
        # writes leaves the previous state.json pointing at the previous, complete files.
        files = {"model": f"model-{step}.safetensors", "optimizer": f"optimizer-{step}.safetensors",
                 "rng": f"rng-{step}.safetensors"}
        save_tensors(state_dir / files["model"], model.state_dict())
        save_tensors(state_dir / files["rng"], _rng(device))
        info = _save_optimizer(state_dir / files["optimizer"], opt)
        write_json(state_dir / "state.json", {"step": step, "files": files, "optimizer": info,
                                              "schedule": schedule.state_dict(), "record": record})
        for stale in state_dir.glob("*.safetensors"):
            if stale.name not in files.values():
                stale.unlink()

    def save_ckpt(step: int, point: dict[str, Any] | None) -> None:
        if point is None:
            with autocast(device, cfg.precision):
                point = {"step": step, **task.evaluate(model)}
        save_checkpoint(out / f"checkpoint-{step}", model, {
            **meta, "step": step, "samples": step * task.samples_per_step(cfg.batch_size),
            "eval": {"loss": point["loss"], "accuracy": point["accuracy"]},
        })

    if start == 0:
        point = evaluate(0)
        if 0 in ckpt_steps:
            save_ckpt(0, point)
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    model.train()
    for step in range(start, cfg.steps):
        ckpt = schedule.checkpoint(step)
        segments = record["supervision"]
        if not segments or segments[-1]["checkpoint"] != ckpt:
            segments.append({"start": step, "end": step + 1, "checkpoint": ckpt})
        else:
            segments[-1]["end"] = step + 1
        if cfg.optim.schedule != "constant" or cfg.optim.warmup:
            lr = lr_at(step, cfg.steps, cfg.optim)
            for group in opt.param_groups:
                group["lr"] = lr
        batch = task.train_batch(step, cfg.batch_size)
        with autocast(device, cfg.precision):
            logits, targets = selected(logits_of(model(batch.inputs)).float(), batch.targets)
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
        if done % cfg.eval_every == 0 or done == cfg.steps or done in ckpt_steps:
            point = evaluate(done)
            bar.set_postfix(loss=f"{point['loss']:.3f}", acc=f"{point['accuracy']:.3f}", refresh=False)
        if done in ckpt_steps:
            save_ckpt(done, point)
        bar.update(1)
        if stop_at is not None and done >= stop_at and done < cfg.steps:
            save_state(done)
            bar.close()
            return record
        if done % state_every == 0 and done < cfg.steps:
            save_state(done)
    bar.close()
    write_json(out / "curve.json", record["curve"])
    write_json(out / "supervision.json", record["supervision"])
    if cfg.save_final and cfg.steps not in ckpt_steps:
        save_ckpt(cfg.steps, record["curve"][-1])
    if state_dir.exists():
        shutil.rmtree(state_dir)
    return record
