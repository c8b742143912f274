"""SGD, Adam and AdamW over stacked models, each model with its own learning rate and step count.

The update of each model is the one `torch.optim`'s single-tensor implementation (its CPU default)
makes for that model alone: the same operations in the same order on the flat buffer [G, P], with the
per-model scalars (step size, decay factor, bias corrections) as [G, 1] columns holding the values
torch would pass as Python numbers. Per-model state converts to and from the state dict of the torch
optimizer of that model alone (`student_state` / `load_student`), so a model's saved training state
is the same whichever loop trained it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..trainer import OptimConfig
from .stack import Stack


class StackedOptimizer:
    """`cfg.name` (sgd, adam, adamw) over `params` with gradients `grads` (stacks of one layout)."""

    def __init__(self, cfg: OptimConfig, params: Stack, grads: Stack, steps: Sequence[int] | None = None) -> None:
        if cfg.name not in ("sgd", "adam", "adamw"):
            raise ValueError(f"unknown optimizer {cfg.name!r}; choose sgd, adam or adamw")
        self.cfg, self.params, self.grads = cfg, params, grads
        g = len(params)
        self.steps = list(steps) if steps is not None else [0] * g  # optimizer steps taken by each model
        self.moments: dict[str, Stack] = {}
        if cfg.name in ("adam", "adamw"):
            self.moments = {"exp_avg": params.zeros_like(), "exp_avg_sq": params.zeros_like()}
        elif cfg.momentum:
            self.moments = {"momentum_buffer": params.zeros_like()}

    def _column(self, values: Sequence[float]) -> torch.Tensor:
        """Per-model scalars as a [G, 1] float32 column (as torch rounds a Python number for a float op)."""
        return torch.tensor(values, dtype=self.params.flat.dtype, device=self.params.flat.device).view(-1, 1)

    @torch.no_grad()
    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Scale each model's gradient to norm <= max_norm as `nn.utils.clip_grad_norm_` does; returns the
        norms before clipping [G]."""
        norms = self.grads.norms()
        coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
        self.grads.flat.mul_(coef.view(-1, 1))
        return norms

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One update of every model, model g with learning rate lrs[g]."""
        self.steps = [s + 1 for s in self.steps]
        if self.cfg.name == "sgd":
            self._sgd(lrs)
        else:
            self._adam(lrs)

    def _sgd(self, lrs: Sequence[float]) -> None:
        cfg, param, grad = self.cfg, self.params.flat, self.grads.flat
        if cfg.weight_decay:
            grad = grad.add(param, alpha=cfg.weight_decay)
        if cfg.momentum:
            buf = self.moments["momentum_buffer"].flat
            first = [s == 1 for s in self.steps]  # torch starts the buffer as a copy of the gradient
            if all(first):
                buf.copy_(grad)
            else:
                buf.mul_(cfg.momentum).add_(grad)
                for g in (i for i, f in enumerate(first) if f):
                    buf[g].copy_(grad[g])
            grad = buf
        if len(set(lrs)) == 1:
            param.add_(grad, alpha=-lrs[0])
        else:
            for g, lr in enumerate(lrs):  # add with alpha is one fused multiply-add per element, as alone
                param[g].add_(grad[g], alpha=-lr)

    def _adam(self, lrs: Sequence[float]) -> None:
        cfg, param, grad = self.cfg, self.params.flat, self.grads.flat
        beta1, beta2 = cfg.betas
        exp_avg, exp_avg_sq = self.moments["exp_avg"].flat, self.moments["exp_avg_sq"].flat
        if cfg.weight_decay:
            if cfg.name == "adamw":
                param.mul_(self._column([1 - lr * cfg.weight_decay for lr in lrs]))
            else:
                grad = grad.add(param, alpha=cfg.weight_decay)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction1 = [1 - beta1 ** s for s in self.steps]
        correction2_sqrt = [(1 - beta2 ** s) ** 0.5 for s in self.steps]
        if len(set(correction2_sqrt)) == 1:
            denom = (exp_avg_sq.sqrt() / correction2_sqrt[0]).add_(_EPS)
        else:
            denom = (exp_avg_sq.sqrt() / self._column(correction2_sqrt)).add_(_EPS)
        # torch: param.addcdiv_(exp_avg, denom, value=-step_size), computed as param + (value * exp_avg) / denom
        step_size = self._column([-(lr / c) for lr, c in zip(lrs, correction1)])
        param.add_(exp_avg.mul(step_size).div_(denom))

    # --- the state of one model, in the format of its own torch optimizer ----------------------------------
    def student_state(self, g: int, param_groups: list[dict[str, Any]]) -> dict[str, Any]:
        """Model g's optimizer state dict as torch's optimizer of that model alone would give it, with
        `param_groups` (that optimizer's, holding its current lr)."""
        state: dict[int, dict[str, Any]] = {}
        if self.steps[g] > 0 and self.moments:
            for i, name in enumerate(self.params.names):
                entry: dict[str, Any] = {key: stack.views[name][g] for key, stack in self.moments.items()}
                if "exp_avg" in entry:
                    entry = {"step": torch.tensor(float(self.steps[g])), **entry}
                state[i] = entry
        return {"state": state, "param_groups": param_groups}

    @torch.no_grad()
    def load_student(self, g: int, state_dict: dict[str, Any], steps: int) -> None:
        """Restore model g's optimizer state from its torch state dict after `steps` training steps."""
        self.steps[g] = steps
        state = state_dict["state"]
        for key, stack in self.moments.items():
            for i, name in enumerate(self.params.names):
                entry = state.get(i, state.get(str(i), {}))
                value = entry.get(key)
                if value is None:
                    stack.views[name][g].zero_()
                else:
                    stack.views[name][g].copy_(value)
        first = state.get(0, state.get("0", {}))
        if "step" in first:
            self.steps[g] = int(float(first["step"]))

    def select(self, index: Sequence[int], params: Stack, grads: Stack) -> "StackedOptimizer":
        """The optimizer of the models `index` (their stacks already selected as `params`, `grads`)."""
        other = StackedOptimizer(self.cfg, params, grads, [self.steps[i] for i in index])
        other.moments = {key: stack.select(index) for key, stack in self.moments.items()}
        return other


_EPS = 1e-8  # torch.optim.Adam / AdamW default eps
