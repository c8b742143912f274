"""Numeric precision of forward passes: fp32, or bfloat16 autocast for speed on GPUs."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The forward-pass context of a precision: bfloat16 autocast for "bf16", nothing for "fp32" (a
    disabled `torch.autocast` is not free: ~5 ms per small BERT step on a CPU). Weights, optimizer state
    and losses stay fp32 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
