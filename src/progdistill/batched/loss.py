"""The distillation loss of G models at once: `losses.distillation_loss` of each model, summed.

The rows of all models' loss positions come concatenated, model by model; each model's loss is the
mean over its own rows (computed as sum / count, whose gradient per row is the 1 / count that the
single model's mean gives), so the sum's gradient reaches every model exactly as its own loss would.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def _means(rows: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Per-model means [G] of per-row values [N] (rows grouped by model, counts[g] rows each)."""
    g = len(counts)
    if len(set(counts)) == 1:
        return rows.view(g, counts[0]).sum(1) / counts[0]
    owner = torch.repeat_interleave(torch.arange(g, device=rows.device),
                                    torch.as_tensor(counts, device=rows.device))
    count = torch.as_tensor(counts, dtype=rows.dtype, device=rows.device)
    return rows.new_zeros(g).index_add(0, owner, rows) / count


def stacked_distillation_terms(logits: torch.Tensor, targets: torch.Tensor, counts: Sequence[int],
                               teacher: Sequence[torch.Tensor | None], alpha: float, tau: float,
                               kind: str = "forward", scale_tau2: bool = False
                               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per model g: (alpha * CE + (1 - alpha) * KD [G], the KD term [G] or None where no model has one),
    as `losses.distillation_terms` gives them for each model alone, one model per segment of the rows:
    logits [N, C], targets [N] (N = sum(counts)); teacher[g] is model g's teacher output on its rows
    (logits [counts[g], C], or argmax labels [counts[g]] at tau == 0) or None (plain CE; its KD entry
    is then meaningless). Raises ValueError for tau < 0, an unknown kind, reverse KL at tau == 0."""
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    if kind not in ("forward", "reverse"):
        raise ValueError(f"kind must be 'forward' or 'reverse', got {kind!r}")
    logits = logits.float()
    taught = [t is not None for t in teacher]
    if tau == 0 and (alpha <= 0 or not any(taught)):  # the recipes' case: one cross-entropy per model
        labels = torch.cat([(t if t.ndim == 1 else t.argmax(-1)) if t is not None else y
                            for t, y in zip(teacher, targets.split(list(counts)))]) if any(taught) else targets
        per_model = _means(F.cross_entropy(logits, labels, reduction="none"), counts)
        return per_model, (per_model if any(taught) else None)
    if not any(taught) or alpha >= 1:
        return _means(F.cross_entropy(logits, targets, reduction="none"), counts), None
    if tau == 0:
        if kind == "reverse":
            raise ValueError("reverse KL needs tau > 0 (a one-hot teacher has log p_T = -inf off its argmax)")
        labels = torch.cat([(t if t.ndim == 1 else t.argmax(-1)) if t is not None else y
                            for t, y in zip(teacher, targets.split(list(counts)))])
        kd = _means(F.cross_entropy(logits, labels, reduction="none"), counts)
    else:
        parts = logits.detach().split(list(counts))  # a model without a teacher: a finite stand-in, weight 0
        soft = torch.cat([t.float() if t is not None else own for t, own in zip(teacher, parts)])
        log_q = F.log_softmax(logits / tau, dim=-1)
        log_p = F.log_softmax(soft / tau, dim=-1)
        rows = -(log_p.exp() * log_q).sum(-1) if kind == "forward" else (log_q.exp() * (log_q - log_p)).sum(-1)
        kd = _means(rows, counts)
        if scale_tau2:
            kd = kd * tau**2
    if alpha <= 0 and (all(taught) or tau == 0):  # at tau == 0 an untaught model's labels are its targets
        return kd, kd
    ce = _means(F.cross_entropy(logits, targets, reduction="none"), counts)
    mixed = kd if alpha <= 0 else alpha * ce + (1 - alpha) * kd
    return torch.where(torch.tensor(taught, device=logits.device), mixed, ce), kd


def stacked_distillation_loss(logits: torch.Tensor, targets: torch.Tensor, counts: Sequence[int],
                              teacher: Sequence[torch.Tensor | None], alpha: float, tau: float,
                              kind: str = "forward", scale_tau2: bool = False) -> torch.Tensor:
    """Sum over models of alpha * CE + (1 - alpha) * KD (`losses.distillation_loss`), one model per
    segment of the rows (see `stacked_distillation_terms`). Returns a scalar tensor."""
    return stacked_distillation_terms(logits, targets, counts, teacher, alpha, tau, kind, scale_tau2)[0].sum()
