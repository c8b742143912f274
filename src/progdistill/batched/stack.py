"""Tensors of G models of one architecture, stacked student-major in one flat buffer.

A `Stack` holds, for every parameter name of the architecture, a view [G, *shape] into one contiguous
buffer [G, P] (P = parameters per model). Element-wise work over all G models (the optimizer, gradient
clipping, zeroing) is then a handful of operations on the buffer, with per-model scalars as [G, 1]
columns, while the stacked forward (`batched.models`) reads the views.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch


class Stack:
    """`names` -> views [G, *shape] of one flat buffer `flat` [G, P] (shapes of one model's tensors)."""

    def __init__(self, names: Sequence[str], shapes: Sequence[torch.Size], flat: torch.Tensor) -> None:
        self.names, self.shapes = list(names), [torch.Size(s) for s in shapes]
        numels = [math.prod(s) for s in self.shapes]
        self.offsets = [sum(numels[:i]) for i in range(len(numels) + 1)]
        if flat.dim() != 2 or flat.shape[1] != self.offsets[-1]:
            raise ValueError(f"flat buffer of shape {tuple(flat.shape)} does not hold {self.offsets[-1]} values per model")
        self.flat = flat
        self.views = {name: flat[:, a:b].view(len(flat), *shape)
                      for name, shape, a, b in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:])}

    @classmethod
    def pack(cls, states: Sequence[dict[str, torch.Tensor]]) -> "Stack":
        """Stack G models' tensors (each a dict name -> tensor, all with the keys and shapes of the first)."""
        if not states:
            raise ValueError("nothing to stack")
        names = list(states[0])
        shapes = [states[0][n].shape for n in names]
        for i, state in enumerate(states):
            if list(state) != names or any(state[n].shape != s for n, s in zip(names, shapes)):
                raise ValueError(f"model {i} does not have the tensors of model 0 (names or shapes differ)")
        flat = torch.stack([torch.cat([state[n].detach().reshape(-1) for n in names]) for state in states])
        return cls(names, shapes, flat)

    def __len__(self) -> int:
        return len(self.flat)

    def zeros_like(self) -> "Stack":
        """A stack of the same layout filled with zeros (gradients, optimizer moments)."""
        return Stack(self.names, self.shapes, torch.zeros_like(self.flat))

    def student(self, g: int) -> dict[str, torch.Tensor]:
        """Model g's tensors (views into the buffer: copy them before the buffer changes)."""
        return {name: view[g] for name, view in self.views.items()}

    def set_student(self, g: int, state: dict[str, torch.Tensor]) -> None:
        """Overwrite model g's tensors with `state` (same names and shapes)."""
        with torch.no_grad():
            for name, view in self.views.items():
                view[g].copy_(state[name])

    def select(self, index: Sequence[int]) -> "Stack":
        """A new stack of the models `index` (in that order), copied out of this one."""
        rows = torch.as_tensor(list(index), dtype=torch.long, device=self.flat.device)
        return Stack(self.names, self.shapes, self.flat.index_select(0, rows))

    def norms(self) -> torch.Tensor:
        """Each model's 2-norm over all its tensors [G], as `torch.nn.utils.clip_grad_norm_` computes it
        for one model (the norm of the per-tensor norms)."""
        n = len(self.names)
        per_tensor = torch._foreach_norm([view[g] for g in range(len(self.flat)) for view in self.views.values()])
        return torch.stack([torch.linalg.vector_norm(torch.stack(per_tensor[i:i + n]))
                            for i in range(0, len(per_tensor), n)])
