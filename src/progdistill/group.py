"""Students of one architecture trained together as one batched model, each as if trained alone.

A group is a list of `Member`s, each given as `trainer.train` takes one model: its freshly initialised
model, task (its own data stream), `TrainConfig` (its own budget, hence its own lr schedule), run
folder, metadata, teacher schedule and teacher-output cache. `train_group` stacks their parameters
(`batched`), and at every step draws each member's batch from its own task, asks each member's schedule
for its teacher checkpoint, computes the teacher's outputs once per (data stream, checkpoint, step),
runs one stacked forward and backward, clips each member's gradient by its own norm and updates each
with its own learning rate and optimizer state. Each member keeps its own files through
`trainer.Run` (curve.json, supervision.json, checkpoints, resumable state in the format `train` writes),
evaluates on its own held-out set when `train` would, and its schedule observes its own evaluations;
a member whose budget is spent writes its final files and leaves the group; afterwards each member's
model holds its weights, as `train` leaves its model. The stacked operations mirror the single
model's, model by model, so the numbers are those of `train`: bit for bit on CPU in tests/test_group.py,
up to float rounding where batches of different widths are padded to one. An interrupted group resumes
from the members' saved states, and a member's state may be resumed by `train` alone or in another group.

`plan_groups` splits a list of students into groups; `memory_per_student` estimates what one member
costs, for a memory cap on the group size.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .batched import Stack, StackedForward, StackedOptimizer, stacked_distillation_terms, stacked_forward
from .models.mlp import MLP
from .precision import autocast
from .schedule import TeacherSchedule
from .tasks.base import IGNORE, Batch, Task
from .teacher_outputs import TeacherOutputs
from .trainer import Run, TrainConfig, lr_at, make_optimizer
from .trajectory import Trajectory


@dataclass
class Member:
    """One model of a group, with what `trainer.train` takes for it (same meanings)."""

    model: nn.Module
    task: Task
    cfg: TrainConfig
    out: str | Path
    meta: dict[str, Any]
    schedule: TeacherSchedule | None = None
    teacher_cache: str | Path | None = None
    desc: str = "train"


GROUP_SIZE = 16  # students.group_size where it is not set and a group is faster


def grouping_pays(model: nn.Module) -> bool:
    """Whether students of this architecture train faster as one batched model than one at a time (the
    default of `students.group_size`): MLPs yes (16 parity students of width 100: 6.1x the samples/s on
    2 CPU cores), Transformers only on a GPU, where small kernels leave it idle; on a CPU their steps are
    compute-bound (16 pcfg-mlm-small BERT students: 1.08x in the benchmark, and 0.90x end to end, where
    groups balance worse over the workers than single students; benchmarks/README.md)."""
    return type(model) is MLP or next(model.parameters()).device.type == "cuda"


def group_key(member: Member) -> tuple | None:
    """What members must share to train in one group: architecture (stacked-forward key and parameter
    shapes), device and training config except the budget. None: this member can only train alone."""
    forward = stacked_forward(member.model)
    if forward is None:
        return None
    shapes = tuple((name, tuple(p.shape)) for name, p in member.model.named_parameters())
    device = next(member.model.parameters()).device
    return forward.key, shapes, str(device), repr({**vars(member.cfg), "steps": None})


class StackedModel:
    """G models as one: parameters as leaves [G, *shape] viewing one flat buffer [G, P]; `backward` leaves
    their gradients in another (so the optimizer works on two flat buffers)."""

    def __init__(self, forward: StackedForward, params: Stack) -> None:
        self.forward, self.params, self.grads = forward, params, params.zeros_like()
        self.leaves = [view.requires_grad_(True) for view in params.views.values()]

    @classmethod
    def of(cls, models: Sequence[nn.Module]) -> "StackedModel":
        forward = stacked_forward(models[0])
        if forward is None:
            raise ValueError(f"{type(models[0]).__name__} has no stacked forward")
        return cls(forward, Stack.pack([{n: p.detach() for n, p in m.named_parameters()} for m in models]))

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.forward(self.params.views, inputs)

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of `loss` into `grads` (replacing what they held)."""
        loss.backward()
        g = len(self.grads)
        parts = [leaf.grad.reshape(g, -1) if leaf.grad is not None else torch.zeros_like(leaf).view(g, -1)
                 for leaf in self.leaves]
        torch.cat(parts, dim=1, out=self.grads.flat)
        for leaf in self.leaves:
            leaf.grad = None

    def select(self, index: Sequence[int]) -> "StackedModel":
        """The models `index`, copied into a new stacked model (the gradients start at zero)."""
        return StackedModel(self.forward, self.params.select(index))


def train_group(members: Sequence[Member], teacher: Trajectory | None = None, progress: bool = True,
                stop_at: int | None = None, desc: str = "group", eval_chunk: int | None = None,
                state_seconds: float = 60.0, log: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Train `members` together (see the module docstring); returns each member's record, as `train`
    would. All members must share `group_key` and, after resuming from their folders, the step they start
    at (ValueError otherwise). `stop_at` ends the run after that step with every unfinished member's
    state saved, as an interruption would; `eval_chunk` caps how many members one held-out forward
    pass evaluates at once (memory). The members' resumable states are saved at their state cadence
    but at most once every `state_seconds` of wall time (0: at every one): a group makes G members'
    steps per step, so saving at every evaluation would cost G times what it costs a model alone,
    while resuming from any saved step gives the same numbers."""
    group = _Group(members, teacher, eval_chunk, state_seconds, log)
    bar = tqdm(total=group.last, initial=group.start, desc=desc, disable=not progress, leave=False, mininterval=1.0)
    try:
        for step in range(group.start, group.last):
            group.train_step(step)
            bar.update(1)
            if not group.after_step(step + 1, stop_at):
                break
    finally:
        bar.close()
        for run in group.runs:
            run.close()
    return group.records


class _Group:
    def __init__(self, members: Sequence[Member], teacher: Trajectory | None, eval_chunk: int | None,
                 state_seconds: float, log: Sequence[str] = ()) -> None:
        if not members:
            raise ValueError("a group needs at least one member")
        keys = [group_key(m) for m in members]
        if keys[0] is None:
            raise ValueError(f"{type(members[0].model).__name__} models cannot be trained as a group (no stacked "
                             "forward, or dropout)")
        for m, key in zip(members, keys):
            if key != keys[0]:
                raise ValueError(f"{m.desc}: cannot train in a group with {members[0].desc}: architecture, device or "
                                 "training settings (other than the number of steps) differ")
        self.members, self.teacher = list(members), teacher
        self.cfg = members[0].cfg
        self.device = next(members[0].model.parameters()).device
        self.eval_chunk = eval_chunk or len(members)
        self.state_seconds, self.saved_at = state_seconds, time.monotonic()
        self.runs = [Run(m.out, m.task, m.cfg, m.meta, m.schedule, m.desc, log=log, device=self.device)
                     for m in members]
        self.records: list[dict[str, Any]] = [run.record for run in self.runs]
        saved = [run.resume(self.device) for run in self.runs]
        starts = {s[0] if s else 0 for s in saved}
        if len(starts) > 1:
            raise ValueError(f"members resume from different steps {sorted(starts)}: group them by their saved step")
        self.start = starts.pop()
        for run in self.runs:
            run.open_loggers(self.start)
        # training losses since each member's last evaluation, summed on the device (flushed into its Run's
        # TrainingLosses before an evaluation or a saved state: `_flush`)
        n = len(members)
        self.loss_sum, self.kd_sum = torch.zeros(n, device=self.device), torch.zeros(n, device=self.device)
        self.loss_steps, self.kd_steps = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        for m, s in zip(members, saved):
            if s is not None:
                m.model.load_state_dict(s[1])
        self.model = StackedModel.of([m.model for m in members])
        self.opt = StackedOptimizer(self.cfg.optim, self.model.params, self.model.grads, [self.start] * len(members))
        for g, s in enumerate(saved):
            if s is not None:
                self.opt.load_student(g, s[2], self.start)
        self.param_groups = make_optimizer(members[0].model, self.cfg.optim).state_dict()["param_groups"]
        self.live = list(range(len(members)))  # member index of each stacked model
        self.last = max(m.cfg.steps for m in members)
        # one data stream per task object, one TeacherOutputs per stream and cache: students of one seed share both
        self.streams = [(id(m.task), str(m.teacher_cache)) for m in members]
        self.outputs: dict[tuple[int, str], TeacherOutputs] = {}
        for m, stream in zip(members, self.streams):
            self.outputs.setdefault(stream, TeacherOutputs(
                teacher, m.task, self.cfg.batch_size, self.device, labels_only=self.cfg.kd.tau == 0,
                cache=m.teacher_cache, precision=self.cfg.precision))
        self.scheduled = self.cfg.optim.schedule != "constant" or bool(self.cfg.optim.warmup)
        self.shared_eval = _shared_eval_batches([m.task for m in members])
        self.pad_id = members[0].task.model_io().get("pad_id")
        if self.start >= self.last:
            raise ValueError(f"nothing to train: the members start at step {self.start} of at most {self.last}")
        if self.start == 0:
            points = self.evaluate(self.live, 0)
            for g, point in zip(self.live, points):
                if 0 in self.runs[g].ckpt_steps:
                    self._save_checkpoint(g, 0, point)

    def lr(self, g: int, step: int) -> float:
        cfg = self.members[g].cfg
        return lr_at(step, cfg.steps, cfg.optim) if self.scheduled else cfg.optim.lr

    # --- one step of every live member ----------------------------------------------------------------------
    def train_step(self, step: int) -> None:
        live = self.live
        checkpoints = [self.runs[g].supervise(step) for g in live]
        self.lrs = [self.lr(g, step) for g in live]
        batches: dict[int, Batch] = {}
        for g in live:
            task = self.members[g].task
            if id(task) not in batches:
                batches[id(task)] = task.train_batch(step, self.cfg.batch_size)
        mine = [batches[self.streams[g][0]] for g in live]
        inputs = _pad_stack([b.inputs for b in mine], self.pad_id)
        targets = _pad_stack([b.targets for b in mine], IGNORE).reshape(len(mine), -1)
        with autocast(self.device, self.cfg.precision):
            logits = self.model(inputs).float()
        logits = logits.reshape(len(mine), -1, logits.shape[-1])
        keep = targets != IGNORE
        if bool(keep.all()):
            rows, labels, counts = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), [targets.shape[1]] * len(mine)
        else:
            rows, labels, counts = logits[keep], targets[keep], keep.sum(1).tolist()
        outputs: dict[tuple, torch.Tensor | None] = {}
        teacher = []
        for g, ckpt, batch in zip(live, checkpoints, mine):
            key = (self.streams[g], ckpt)
            if key not in outputs:
                outputs[key] = self.outputs[self.streams[g]].get(ckpt, step, batch)
            teacher.append(outputs[key])
        kd = self.cfg.kd
        per_model, kd_terms = stacked_distillation_terms(rows, labels, counts, teacher, kd.alpha, kd.tau, kd.kind,
                                                         kd.scale_tau2)
        self.model.backward(per_model.sum())
        index = torch.tensor(live, device=self.device)
        self.loss_sum.index_add_(0, index, per_model.detach())
        taught = [t is not None for t in teacher]
        self.loss_steps[live] += 1
        if kd_terms is not None:
            self.kd_steps[live] += np.array(taught, dtype=np.int64)
        if kd_terms is not None and any(taught):
            self.kd_sum.index_add_(0, index, kd_terms.detach() * torch.tensor(taught, device=self.device))
        if self.cfg.optim.grad_clip:
            self.opt.clip_grad_norm(self.cfg.optim.grad_clip)
        self.opt.step(self.lrs)

    def after_step(self, done: int, stop_at: int | None) -> bool:
        """Evaluations, checkpoints, states and finished members after `done` steps; False to stop."""
        due = [g for g in self.live if self.runs[g].needs_eval(done)]
        points = dict(zip(due, self.evaluate(due, done))) if due else {}
        for g in self.live:
            if done in self.runs[g].ckpt_steps:
                self._save_checkpoint(g, done, points.get(g))
        unfinished = [g for g in self.live if done < self.members[g].cfg.steps]
        finished = [g for g in self.live if g not in unfinished]
        _each(self._finish, finished)
        if stop_at is not None and done >= stop_at and unfinished:
            _each(lambda g: self._save_state(g, done), unfinished)
            for g in unfinished:
                self._load_into_model(g)
            return False
        cadence = [g for g in unfinished if done % self.runs[g].state_every == 0]
        if cadence and time.monotonic() - self.saved_at >= self.state_seconds:
            _each(lambda g: self._save_state(g, done), cadence)
            self.saved_at = time.monotonic()
        if finished and unfinished:
            self._keep(unfinished)
        return bool(unfinished)

    def _finish(self, g: int) -> None:
        self._load_into_model(g)
        self.records[g] = self.runs[g].finish(self.members[g].model)

    # --- files of one member ----------------------------------------------------------------------------------
    def _row(self, g: int) -> int:
        return self.live.index(g)

    def _load_into_model(self, g: int) -> None:
        self.members[g].model.load_state_dict(self.model.params.student(self._row(g)))

    def _save_checkpoint(self, g: int, step: int, point: dict[str, Any] | None) -> None:
        self._load_into_model(g)
        self.runs[g].save_checkpoint(step, self.members[g].model, point)

    def _flush(self, g: int) -> None:
        """Move member g's training losses since its last evaluation into its Run (metrics.jsonl, state)."""
        losses = self.runs[g].losses
        state = losses.state_dict()
        losses.load_state_dict({"steps": state["steps"] + int(self.loss_steps[g]),
                                "loss": state["loss"] + float(self.loss_sum[g]),
                                "kd_steps": state["kd_steps"] + int(self.kd_steps[g]),
                                "kd": state["kd"] + float(self.kd_sum[g])})
        self.loss_sum[g] = 0.0
        self.kd_sum[g] = 0.0
        self.loss_steps[g] = self.kd_steps[g] = 0

    def _save_state(self, g: int, done: int) -> None:
        self._flush(g)
        row = self._row(g)
        groups = [{**group, "lr": self.lrs[row] if self.scheduled else group["lr"]} for group in self.param_groups]
        self.runs[g].save_state(done, self.model.params.student(row), self.opt.student_state(row, groups))

    def _keep(self, index: list[int]) -> None:
        rows = [self._row(g) for g in index]
        model = self.model.select(rows)
        self.opt = self.opt.select(rows, model.params, model.grads)
        self.model, self.live = model, index
        self.lrs = [self.lrs[r] for r in rows]

    # --- held-out evaluation --------------------------------------------------------------------------------
    def evaluate(self, index: list[int], done: int) -> list[dict[str, Any]]:
        """Evaluate members `index` after `done` steps and record the points (as `Run.evaluate`)."""
        for g in index:
            self._flush(g)
        if self.shared_eval is None:
            points = []
            for g in index:
                self._load_into_model(g)
                points.append(self.runs[g].evaluate(self.members[g].model, done))
            return points
        metrics: list[dict[str, float]] = []
        for a in range(0, len(index), self.eval_chunk):
            chunk = [self._row(g) for g in index[a:a + self.eval_chunk]]
            every = chunk == list(range(len(self.live)))
            params = {n: v.detach() for n, v in self.model.params.views.items()} if every else \
                self.model.params.select(chunk).views
            with autocast(self.device, self.cfg.precision):
                metrics += _stacked_evaluate(self.model.forward, params, self.shared_eval)
        return [self.runs[g].add_eval(done, m) for g, m in zip(index, metrics)]


def _each(fn: Callable[[int], None], members: Sequence[int]) -> None:
    """fn(g) for every member, in threads: each writes its own files, mostly waiting on the disk (fsync)."""
    if len(members) <= 1:
        for g in members:
            fn(g)
        return
    with ThreadPoolExecutor(min(8, len(members))) as pool:
        for future in [pool.submit(fn, g) for g in members]:
            future.result()


def _pad_stack(tensors: Sequence[torch.Tensor], value: int | None) -> torch.Tensor:
    """Stack tensors of one batch size, padding shorter sequences at the end with `value` (batches of
    sentences are as wide as their longest; a padded position is ignored as padding is alone)."""
    first = tensors[0].shape
    if all(t.shape == first for t in tensors):
        return torch.stack(tensors)
    shape = [max(sizes) for sizes in zip(*(t.shape for t in tensors))]
    if value is None:
        raise ValueError(f"batches of shapes {sorted({tuple(t.shape) for t in tensors})} differ and the task has no "
                         "padding token")
    out = tensors[0].new_full((len(tensors), *shape), value)
    for row, t in zip(out, tensors):
        row[tuple(slice(0, n) for n in t.shape)] = t
    return out


def _shared_eval_batches(tasks: Sequence[Task]) -> list[Batch] | None:
    """The held-out batches of all tasks if they are the same and evaluated by `Task.evaluate` (then one
    stacked forward evaluates every member); None otherwise (each member is evaluated alone)."""
    distinct = list({id(t): t for t in tasks}.values())
    if any(type(t).evaluate is not Task.evaluate for t in distinct):
        return None
    first = distinct[0].eval_batches()
    for task in distinct[1:]:
        other = task.eval_batches()
        if len(other) != len(first) or not all(torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
                                                for a, b in zip(first, other)):
            return None
    return first


@torch.no_grad()
def _stacked_evaluate(forward: StackedForward, params: dict[str, torch.Tensor],
                      batches: Sequence[Batch]) -> list[dict[str, float]]:
    """`Task.evaluate` of each stacked model on the same held-out batches: mean cross-entropy and top-1
    accuracy over the positions that carry a loss."""
    g = next(iter(params.values())).shape[0]
    total = [0.0] * g
    correct = torch.zeros(g, dtype=torch.long)
    count = 0
    for batch in batches:
        logits = forward(params, batch.inputs.unsqueeze(0).expand(g, *batch.inputs.shape))
        keep = batch.targets != IGNORE
        rows = logits[:, keep].float()  # [G, n, C]
        targets = batch.targets[keep]
        for i in range(g):  # the sum as Task.evaluate takes it, model by model
            total[i] += float(F.cross_entropy(rows[i], targets, reduction="sum"))
        correct += (rows.argmax(-1) == targets).sum(1).cpu()
        count += int(targets.numel())
    return [{"loss": total[i] / max(count, 1), "accuracy": int(correct[i]) / max(count, 1)} for i in range(g)]


# --- planning ------------------------------------------------------------------------------------------------
def plan_groups(keys: Sequence[Any], size: int) -> list[list[int]]:
    """Split items into groups of at most `size`: items are ordered by `keys` (items with equal keys stay
    together as far as the sizes allow) and cut into as few groups of near-equal size as the cap allows.
    Returns lists of item indices."""
    if size < 1:
        raise ValueError(f"need size >= 1, got {size}")
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    if not order:
        return []
    count = math.ceil(len(order) / size)
    bounds = [round(i * len(order) / count) for i in range(count + 1)]
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def makespan(costs: Sequence[float], workers: int) -> float:
    """The finishing time of jobs of these costs on `workers` workers that each take the next job when
    free, the costliest jobs first (the order `balance_groups` hands them out)."""
    loads = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += cost
    return max(loads)


def balance_groups(groups: list[list[Any]], cost: Callable[[Any], float], workers: int) -> list[list[Any]]:
    """Split groups in halves (keeping their order) while that shortens the makespan on `workers`
    workers (`makespan`, a group's cost the sum of its items' `cost`, e.g. their training steps); at
    least `workers` groups where there are enough items. Returns the groups, costliest first. A group
    of one item is never split."""
    def total(group: list[Any]) -> float:
        return sum(cost(item) for item in group)

    groups = [list(g) for g in groups if g]
    while True:
        splittable = [g for g in groups if len(g) > 1]
        if not splittable:
            break
        largest = max(splittable, key=total)
        candidate = [g for g in groups if g is not largest] + [largest[:len(largest) // 2], largest[len(largest) // 2:]]
        if len(groups) >= workers and makespan([total(g) for g in candidate], workers) >= \
                makespan([total(g) for g in groups], workers):
            break
        groups = candidate
    return sorted(groups, key=total, reverse=True)


def memory_per_student(model: nn.Module, task: Task, batch_size: int) -> tuple[int, int]:
    """Bytes one member adds to a group: (training, held-out evaluation). Training: its parameters,
    gradients and two optimizer moments, plus the activations autograd saves in a forward pass on one
    training batch; evaluation: the activations of a forward pass on the largest held-out batch
    (counted as if saved for backward, which bounds what a no-grad pass holds at once)."""
    def saved_bytes(inputs: torch.Tensor) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(inputs)
        return sum(seen.values()) + inputs.numel() * inputs.element_size()

    params = sum(p.numel() * p.element_size() for p in model.parameters())
    train = 4 * params + saved_bytes(task.train_batch(0, batch_size).inputs)
    largest = max(task.eval_batches(), key=lambda b: b.inputs.numel())
    return train, saved_bytes(largest.inputs)
