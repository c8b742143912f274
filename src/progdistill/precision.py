"""Numeric precision of forward passes: fp32, or bfloat16 autocast for speed on GPUs."""

from __future__ import annotations

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward-pass context of a precision: bfloat16 autocast for "bf16", a no-op for "fp32".
    Weights, optimizer state and losses stay fp32 either way."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
