"""BERT's masking (Devlin et al. 2019), shared by the masked-LM tasks (grammars and natural text)."""

from __future__ import annotations

import torch

from .base import IGNORE, Batch


def bert_mask(inputs: torch.Tensor, eligible: torch.Tensor, gen: torch.Generator, mask_prob: float,
              mask_token_prob: float, random_token_prob: float, mask_id: int, noise_low: int,
              noise_high: int) -> Batch:
    """Mask clean token rows `inputs` [B, T] (int64) with draws from `gen`, in this order: u [B, T]
    chooses each `eligible` position [B, T] (bool) with probability `mask_prob` (if none is chosen, the
    eligible position of lowest u, so that every batch has a loss); `action` [B, T] replaces a chosen
    token by `mask_id` with probability `mask_token_prob`, by a random token drawn uniformly from
    [noise_low, noise_high) with probability `random_token_prob`, else keeps it. Returns the masked
    inputs and targets (the clean token at chosen positions, IGNORE elsewhere)."""
    shape, device = inputs.shape, inputs.device
    u = torch.rand(shape, generator=gen, device=device)
    chosen = eligible & (u < mask_prob)
    lowest = u.masked_fill(~eligible, 2.0).view(-1).argmin()  # fallback: the eligible position of lowest u
    fallback = torch.zeros_like(chosen).view(-1).index_fill(0, lowest.view(1), True).view(shape)
    chosen |= fallback & ~chosen.any() & eligible.any()
    action = torch.rand(shape, generator=gen, device=device)
    noise = torch.randint(noise_low, noise_high, shape, generator=gen, device=device)
    out = torch.where(chosen & (action < mask_token_prob), mask_id, inputs)
    replace = chosen & (action >= mask_token_prob) & (action < mask_token_prob + random_token_prob)
    out = torch.where(replace, noise, out)
    return Batch(out, torch.where(chosen, inputs, IGNORE))
