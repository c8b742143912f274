"""n-gram probes of a masked language model (SPEC §4).

For a sentence and a target position i, the base input masks only i. Windows hold the n tokens on each
side of i (2n+1 tokens, clipped at the sentence edges; BOS and PAD are never touched) and are named by
that true size:
- M_robust(n): also mask the window -> TV distance to the base prediction at i; large = the prediction
  depends on the local n-gram.
- M_close(n): mask every terminal outside the window -> TV distance; small = the n-gram suffices.
TV distance = ½·L1 between the softmax distributions at i.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.outputs import logits_of


def target_positions(lengths: torch.Tensor, positions: int) -> torch.Tensor:
    """[N, positions] indices evenly spaced over each sentence's terminal span 1..L-1: index
    1 + round(k/(positions+1) * (L-2)) for k = 1..positions (L = length incl. BOS)."""
    if bool((lengths < 2).any()):
        raise ValueError("every sentence needs at least one terminal (length >= 2 incl. BOS)")
    k = torch.arange(1, positions + 1, device=lengths.device)
    span = (lengths[:, None] - 2) * k  # k * (last terminal - first terminal)
    return 1 + (2 * span + positions + 1) // (2 * (positions + 1))


def _expand(tokens: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor,
            pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One row per (sentence, position) [P, T], each index's distance to its target [P, T], and the
    terminal mask [P, T] (neither BOS nor padding)."""
    m = positions.shape[1]
    rows = tokens.repeat_interleave(m, 0)
    idx = torch.arange(tokens.shape[1], device=tokens.device)
    dist = (idx - positions.reshape(-1, 1)).abs()
    terminal = (idx >= 1) & (idx < lengths.repeat_interleave(m)[:, None]) & (rows != pad_id)
    return rows, dist, terminal


def base_inputs(tokens: torch.Tensor, positions: torch.Tensor, mask_id: int) -> torch.Tensor:
    """[P, T]: each sentence with only its target position masked, rows ordered (sentence, position)."""
    rows = tokens.repeat_interleave(positions.shape[1], 0)
    return rows.scatter(1, positions.reshape(-1, 1), mask_id)


def ngram_inputs(tokens: torch.Tensor, lengths: torch.Tensor, positions: torch.Tensor, n: int,
                 mask_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(robust, close) inputs [P, T] for the window of n tokens each side, rows ordered like
    `base_inputs`: robust masks the window (target included), close masks the target and every
    terminal outside the window."""
    rows, dist, terminal = _expand(tokens, lengths, positions, pad_id)
    window = terminal & (dist <= n)
    robust = rows.masked_fill(window, mask_id)
    close = rows.masked_fill((terminal & ~window) | (dist == 0), mask_id)
    return robust, close


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without any)."""
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def _predict(model: nn.Module, inputs: torch.Tensor, centre: torch.Tensor, vocab: slice | None,
             batch_size: int) -> torch.Tensor:
    """Softmax distributions [P, V] at each row's target position."""
    out = []
    for s in range(0, len(inputs), batch_size):
        logits = logits_of(model(inputs[s:s + batch_size]))
        at = logits[torch.arange(len(logits), device=logits.device), centre[s:s + batch_size]]
        out.append(torch.softmax((at if vocab is None else at[:, vocab]).double(), -1))
    return torch.cat(out)


def tv_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """½·L1 distance between distributions along the last dimension."""
    return 0.5 * (p - q).abs().sum(-1)


def summarize(values: torch.Tensor) -> dict[str, float]:
    q = torch.quantile(values.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64,
                                                     device=values.device))
    return {"median": float(q[1]), "q25": float(q[0]), "q75": float(q[2]), "mean": float(values.mean())}


@torch.no_grad()
def ngram_probe(model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor, mask_id: int, pad_id: int,
                n_max: int = 3, positions: int = 4, batch_size: int = 256,
                vocab: slice | None = None) -> dict[str, Any]:
    """M_robust and M_close summaries for windows of 1..n_max tokens each side, over `positions` evenly
    spaced targets per sentence; windows keyed by their size 2n+1."""
    device = model_device(model)
    tokens, lengths = tokens.to(device), lengths.to(device)
    pos = target_positions(lengths, positions)
    centre = pos.reshape(-1)
    was_training = model.training
    model.eval()
    try:
        base = _predict(model, base_inputs(tokens, pos, mask_id), centre, vocab, batch_size)
        windows = {}
        for n in range(1, n_max + 1):
            robust, close = ngram_inputs(tokens, lengths, pos, n, mask_id, pad_id)
            windows[str(2 * n + 1)] = {
                "tokens_each_side": n,
                "robust": summarize(tv_distance(base, _predict(model, robust, centre, vocab, batch_size))),
                "close": summarize(tv_distance(base, _predict(model, close, centre, vocab, batch_size))),
            }
    finally:
        model.train(was_training)
    return {"windows": windows, "pairs": len(centre)}
