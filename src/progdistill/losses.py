"""Distillation loss: L = alpha * CE(student, y) + (1 - alpha) * KD(teacher -> student)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    tau: float = 0.0,
    kind: str = "forward",
    scale_tau2: bool = False,
) -> torch.Tensor:
    """Mean KD loss over rows of [N, C] logits.

    tau == 0: cross-entropy against the teacher's argmax (exact, no overflow); `teacher_logits` may
    then also be the argmax itself, [N] integer labels.
    forward: sum_v p_T(v) * (-log q_S(v)), p_T = softmax(z_T / tau), q_S = softmax(z_S / tau)
    (the cross-entropy form; its gradient equals that of KL(p_T || q_S)).
    reverse: KL(q_S || p_T) = sum_v q_S(v) * (log q_S(v) - log p_T(v)), on probabilities.
    scale_tau2 multiplies by tau^2 (Hinton et al.), keeping gradient size comparable across tau.
    """
    if tau < 0:
        raise ValueError(f"tau must be >= 0, got {tau}")
    if tau == 0:
        if kind == "reverse":
            raise ValueError("reverse KL needs tau > 0 (a one-hot teacher has log p_T = -inf off its argmax)")
        labels = teacher_logits if teacher_logits.ndim == 1 else teacher_logits.argmax(-1)
        return F.cross_entropy(student_logits.float(), labels)
    log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / tau, dim=-1)
    if kind == "forward":
        loss = -(log_p.exp() * log_q).sum(-1).mean()
    elif kind == "reverse":
        loss = (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    else:
        raise ValueError(f"kind must be 'forward' or 'reverse', got {kind!r}")
    return loss * tau**2 if scale_tau2 else loss


def distillation_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    tau: float,
    kind: str = "forward",
    scale_tau2: bool = False,
) -> torch.Tensor:
    """alpha * CE + (1 - alpha) * KD; without a teacher it is plain CE."""
    ce = F.cross_entropy(student_logits.float(), targets)
    if teacher_logits is None or alpha >= 1:
        return ce
    kd = kd_loss(student_logits, teacher_logits, tau, kind, scale_tau2)
    return kd if alpha <= 0 else alpha * ce + (1 - alpha) * kd
