"""The batch-1 path: SGD at batch size 1 on a one-hidden-layer MLP, a chunk of steps at a time.

SPEC §3's parity regime (an MLP of width up to 50,000, batch 1, millions of SGD steps) spends a plain
training loop's time in Python and framework overhead at small widths, and at large widths in streaming
the first-layer matrix W1 [h, d] twice per step (a matrix-vector product and a rank-1 update). This path
gives the same updates (float rounding aside) with neither:

- the inputs X [T, d] of a chunk of T steps are known in advance, so the chunk's first-layer
  pre-activations under its starting weights are one GEMM, Z = X W1ᵀ + b1;
- step s changes W1 by -lr_s g_s x_sᵀ and b1 by -lr_s g_s (g_s: the gradient of its loss w.r.t. its
  pre-activations), which changes a later step t's pre-activations by -lr_s (x_t·x_s + 1) g_s: so
  z_t = Z_t - Σ_{s<t} M[t, s] g_s, with M from the inputs' Gram matrix X Xᵀ (weight decay multiplies in
  products of (1 - lr·wd));
- the second layer [C, h] is small and updated every step; at the end of the chunk W1 and b1 take all
  the chunk's updates in one GEMM.

Steps run in blocks of B: inside a block the Σ runs in a compiled loop (`batch1_kernels`, Numba) or in
torch ops (any device; the fallback without Numba, and the GPU variant); between blocks it is one GEMM.
So the cost per step is ~4·h·d flops in GEMMs plus ~(T/2 + B/2 + 6)·h in the sequential part, instead
of ~3·h·d floats streamed from memory plus ~20 framework calls.

`make_batch1_path` decides whether the path applies to a run (see `blocker`); `trainer.train` uses it
automatically (`TrainConfig.batch1`, recipe key `batch1`). Its chunks end where the generic loop
evaluates, saves a checkpoint or its state, so the curve, checkpoints and resumable state are the same
files at the same steps, and a run resumes bit-identically to itself.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from . import batch1_kernels
from .losses import distillation_terms
from .models.mlp import MLP
from .schedule import TeacherSchedule
from .tasks.base import IGNORE, Task
from .teacher_outputs import TeacherOutputs

if TYPE_CHECKING:  # type hints only: the trainer imports this module
    from .trainer import TrainConfig

BACKENDS = ("auto", "numba", "torch", "off")


def default_sizes(width: int) -> tuple[int, int]:
    """(chunk T, block B) for a hidden width: the best by CPU time at d=100 of T in 32..256 and B in 16..64
    at width 1,000 (T=128, B=32) and at width 50,000 (T=64, B=16) (benchmarks/bench_batch1.py --sweep)."""
    return (128, 32) if width < 10_000 else (64, 16)


def blocker(model: nn.Module, task: Task, cfg: "TrainConfig", step: int = 0) -> str | None:
    """Why the batch-1 path cannot run this training (None if it can): it needs batch size 1, plain SGD
    (no momentum, no gradient clipping, lr·weight_decay < 1), fp32, a progdistill `MLP` with one hidden
    layer, forward (not reverse) KD, and a task whose batches are one flat input row and one label."""
    o, kd = cfg.optim, cfg.kd
    reasons = [
        (cfg.batch_size != 1, f"batch size {cfg.batch_size} (it needs 1)"),
        (o.name != "sgd", f"optimizer {o.name} (it needs sgd)"),
        (o.momentum != 0, "SGD momentum"),
        (bool(o.grad_clip), "gradient clipping"),
        (o.lr * o.weight_decay >= 1, "lr * weight_decay >= 1"),
        (cfg.precision != "fp32", f"precision {cfg.precision}"),
        (kd.alpha < 1 and kd.tau > 0 and kd.kind != "forward", f"KD kind {kd.kind}"),
        (type(model) is not MLP or len(model.net) != 3, "a model other than a one-hidden-layer MLP"),
    ]
    for failed, why in reasons:
        if failed:
            return why
    first = model.net[0]
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "parameters that are not float32"
    batch = task.train_batch(step, 1)
    if tuple(batch.inputs.shape) != (1, first.in_features) or tuple(batch.targets.shape) != (1,):
        return (f"task batches of shape {tuple(batch.inputs.shape)} -> {tuple(batch.targets.shape)} (it needs "
                f"one flat input row of {first.in_features} and one label)")
    return None


def make_batch1_path(model: nn.Module, task: Task, cfg: "TrainConfig", lr: Callable[[int], float],
                     teachers: TeacherOutputs, step: int = 0) -> "Batch1Path | None":
    """The batch-1 path for a training, or None for the generic loop.

    `cfg.batch1`: "auto" (the path where it applies: Numba on a CPU when installed, torch ops otherwise),
    "numba" or "torch" (that backend; ValueError if it does not apply or Numba is not installed), "off".
    `lr(step)` is the learning rate of update `step`.
    """
    choice = getattr(cfg, "batch1", "auto")
    if choice not in BACKENDS:
        raise ValueError(f"batch1 must be one of {', '.join(BACKENDS)}, got {choice!r}")
    if choice == "off":
        return None
    why = blocker(model, task, cfg, step)
    if why is not None:
        if choice == "auto":
            return None
        raise ValueError(f"batch1={choice}: the batch-1 path does not apply to this training: {why}")
    device = next(model.parameters()).device
    if choice == "numba" and not batch1_kernels.NUMBA:
        raise ValueError("batch1=numba: Numba is not installed (pip install 'progdistill[fast]')")
    if choice == "numba" and device.type != "cpu":
        raise ValueError(f"batch1=numba runs on the CPU, the model is on {device}; use batch1=torch")
    backend = choice if choice != "auto" else ("numba" if batch1_kernels.NUMBA and device.type == "cpu"
                                               else "torch")
    return Batch1Path(model, lr, cfg.optim.weight_decay, cfg.kd.alpha, cfg.kd.tau, cfg.kd.scale_tau2, backend,
                      teachers)


class Batch1Path:
    """Batch-1 SGD on `model` (a one-hidden-layer `MLP`, updated in place) in chunks of steps.

    lr(step): learning rate of update `step`; weight_decay as torch.optim.SGD's (also on biases);
    alpha, tau, scale_tau2: the distillation loss of `losses.distillation_loss` (forward KD);
    backend: "numba" (CPU) or "torch" (any device); chunk, block: T and B (default `default_sizes`).
    """

    def __init__(self, model: MLP, lr: Callable[[int], float], weight_decay: float, alpha: float, tau: float,
                 scale_tau2: bool, backend: str, teachers: TeacherOutputs | None = None,
                 chunk: int | None = None, block: int | None = None) -> None:
        if backend not in ("numba", "torch"):
            raise ValueError(f"backend must be numba or torch, got {backend!r}")
        first, last = model.net[0], model.net[2]
        self.W1, self.b1, self.W2, self.b2 = first.weight, first.bias, last.weight, last.bias
        self.lr, self.weight_decay, self.alpha, self.tau, self.scale_tau2 = lr, weight_decay, alpha, tau, scale_tau2
        self.backend, self.teachers = backend, teachers
        width, self.classes = self.W1.shape[0], self.W2.shape[0]
        sizes = default_sizes(width)
        self.chunk, self.block = chunk or sizes[0], block or sizes[1]
        if self.chunk < 1 or self.block < 1:
            raise ValueError(f"chunk and block must be >= 1, got {self.chunk}, {self.block}")
        self.device = self.W1.device
        self._Z = torch.empty(self.chunk, width, device=self.device)
        self._G = torch.empty(self.chunk, width, device=self.device)
        self._O = torch.empty(self.chunk, self.classes, device=self.device)
        self.losses: Any = None  # a metric_logging.TrainingLosses, given by `run`

    @torch.no_grad()
    def run(self, start: int, stop: int, task: Task, schedule: TeacherSchedule | None = None,
            supervision: list[dict[str, Any]] | None = None, losses: Any = None) -> int:
        """Train steps [start, stop) on `task.train_examples`, in chunks of at most T steps starting at
        `start`; appends to `supervision` as the generic loop does, and each step's training loss and KD
        term to `losses` (a `metric_logging.TrainingLosses`) if given. Returns `stop`."""
        schedule = schedule or TeacherSchedule(None)
        self.losses = losses
        for a in range(start, stop, self.chunk):
            b = min(a + self.chunk, stop)
            ckpts = [schedule.checkpoint(s) for s in range(a, b)]
            if supervision is not None:
                _record(supervision, a, ckpts)
            self._chunk(a, b, task, ckpts)
        return stop

    def _targets(self, a: int, b: int, x: torch.Tensor, y: torch.Tensor,
                 ckpts: list[int | None]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._segments: list[tuple[int, int, torch.Tensor | None]] = []  # (i, j, teacher outputs) for the losses
        """(R [T, C], c_hard [T], c_soft [T]): the gradient of step t's loss w.r.t. its logits o is
        c_hard[t]·softmax(o) + c_soft[t]·softmax(o/tau) - R[t] (alpha·CE + (1-alpha)·KD, SPEC §2)."""
        n, C = b - a, self.classes
        R = torch.zeros(n, C, device=self.device)
        c_hard = torch.ones(n)
        c_soft = torch.zeros(n)
        alpha = 1.0 if self.alpha >= 1 else max(self.alpha, 0.0)
        ce = torch.full((n,), alpha)
        i = 0
        while i < n:  # segments of one teacher checkpoint: one batched teacher forward each
            j = i
            while j < n and ckpts[j] == ckpts[i]:
                j += 1
            ckpt = ckpts[i]
            if ckpt is None or alpha >= 1:
                ce[i:j] = 1.0
                self._segments.append((i, j, None))
            else:
                assert self.teachers is not None, "a teacher schedule needs the teacher's outputs"
                out = self.teachers.get_range(ckpt, a + i, a + j, x[i:j])
                self._segments.append((i, j, out))
                kd = 1 - alpha
                if self.tau == 0:
                    R[i:j].scatter_add_(1, out.view(-1, 1).long(), torch.full((j - i, 1), kd, device=self.device))
                else:
                    w = kd * (self.tau if self.scale_tau2 else 1 / self.tau)  # (1-alpha)·tau²/tau or /tau
                    R[i:j] += w * torch.softmax(out.float() / self.tau, dim=-1)
                    c_hard[i:j] = alpha
                    c_soft[i:j] = w
            i = j
        R.scatter_add_(1, y.view(-1, 1), ce.to(self.device).view(-1, 1))
        return R, c_hard, c_soft

    def _chunk(self, a: int, b: int, task: Task, ckpts: list[int | None]) -> None:
        batch = task.train_examples(a, b)
        x, y = batch.inputs.float(), batch.targets
        if bool((y == IGNORE).any()):
            raise ValueError(f"the batch-1 path needs a label at every step; steps {a}..{b - 1} have none")
        n = b - a
        R, c_hard, c_soft = self._targets(a, b, x, y, ckpts)
        lrs = np.array([self.lr(s) for s in range(a, b)], dtype=np.float64)
        decay = 1.0 - lrs * self.weight_decay
        A = np.concatenate([[1.0], np.cumprod(decay)])  # A[t]: product of the decays of steps < t
        wd = self.weight_decay != 0
        Z, G = self._Z[:n], self._G[:n]
        torch.addmm(self.b1, x, self.W1.t(), out=Z)
        gram = (x @ x.t()).add_(1).cpu().double().numpy()
        M = np.tril(gram * lrs[None, :], -1)
        if wd:
            Z.mul_(torch.from_numpy(A[:n]).float().to(self.device).view(-1, 1))
            M *= np.tril(A[:n, None] / A[None, 1:n + 1], -1)
        M32 = torch.from_numpy(M.astype(np.float32)).to(self.device)
        lrs32, decay32 = lrs.astype(np.float32), decay.astype(np.float32)
        O = self._O[:n]
        for r0 in range(0, n, self.block):
            r1 = min(r0 + self.block, n)
            if r0:
                Z[r0:r1].addmm_(M32[r0:r1, :r0], G[:r0], alpha=-1)
            if self.backend == "numba":
                batch1_kernels.steps(Z.numpy(), M32.numpy(), lrs32, decay32, self.W2.detach().numpy(),
                                     self.b2.detach().numpy(), R.numpy(), c_hard.numpy(), c_soft.numpy(),
                                     np.float32(self.tau or 1.0), G.numpy(), r0, r1, O.numpy())
            else:
                self._torch_steps(Z, M32, lrs32, decay32, R, c_hard, c_soft, G, r0, r1, O)
        if self.losses is not None:
            self._add_losses(O, y)
        coef = lrs * A[n] / A[1:n + 1]  # step s's update as it stands at the end of the chunk
        if wd:
            self.W1.mul_(float(A[n]))
            self.b1.mul_(float(A[n]))
        scaled = x * torch.from_numpy(coef.astype(np.float32)).to(self.device).view(-1, 1)
        self.W1.addmm_(G.t(), scaled, alpha=-1)
        self.b1.addmv_(G.t(), torch.from_numpy(coef.astype(np.float32)).to(self.device), alpha=-1)

    def _add_losses(self, O: torch.Tensor, y: torch.Tensor) -> None:
        """Each step's loss (its logits O [n, C] before its update, label y [n]) as the generic loop computes
        it (`losses.distillation_terms` at batch size 1), summed per segment of one teacher checkpoint."""
        for i, j, out in self._segments:
            loss, kd = distillation_terms(O[i:j], y[i:j], out, self.alpha, self.tau, "forward", self.scale_tau2)
            self.losses.add_steps(loss * (j - i), None if kd is None else kd * (j - i), j - i)

    def _torch_steps(self, Z: torch.Tensor, M: torch.Tensor, lrs: np.ndarray, decay: np.ndarray, R: torch.Tensor,
                     c_hard: torch.Tensor, c_soft: torch.Tensor, G: torch.Tensor, r0: int, r1: int,
                     O: torch.Tensor) -> None:
        """`batch1_kernels.steps` in torch ops (any device): one step at a time."""
        W2, b2 = self.W2, self.b2
        for t in range(r0, r1):
            z = Z[t]
            if t > r0:
                z.addmv_(G[r0:t].t(), M[t, r0:t], alpha=-1)
            hidden = torch.relu(z)
            o = torch.addmv(b2, W2, hidden)
            O[t] = o
            e = -R[t]
            if c_hard[t]:
                e.add_(torch.softmax(o, 0), alpha=float(c_hard[t]))
            if c_soft[t]:
                e.add_(torch.softmax(o / self.tau, 0), alpha=float(c_soft[t]))
            torch.mv(W2.t(), e, out=G[t])
            G[t].mul_(z > 0)
            if decay[t] != 1:
                W2.mul_(float(decay[t]))
                b2.mul_(float(decay[t]))
            W2.addr_(e, hidden, alpha=-float(lrs[t]))
            b2.add_(e, alpha=-float(lrs[t]))


def _record(supervision: list[dict[str, Any]], start: int, ckpts: list[int | None]) -> None:
    """Extend the supervision segments by steps start.. supervised by `ckpts`, as the generic loop does."""
    step = start
    for ckpt, run in itertools.groupby(ckpts):
        end = step + sum(1 for _ in run)
        if supervision and supervision[-1]["checkpoint"] == ckpt:
            supervision[-1]["end"] = end
        else:
            supervision.append({"start": step, "end": end, "checkpoint": ckpt})
        step = end
