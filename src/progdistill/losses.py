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
    """Mean KD loss over rows of [N, C] logits (the positions that carry a loss; see `tasks.base.selected`).

    tau == 0: cross-entropy against the teacher's argmax (exact, no overflow); `teacher_logits` may
    then also be the argmax itself, [N] integer labels.
    forward: sum_v p_T(v) * (-log q_S(v)), p_T = softmax(z_T / tau), q_S = softmax(z_S / tau)
    (the cross-entropy form; its gradient equals that of KL(p_T || q_S)).
    reverse: KL(q_S || p_T) = sum_v q_S(v) * (log q_S(v) - log p_T(v)), on probabilities.
    Classes a distribution gives probability 0 (logit -inf) add 0 to its sum, by 0 * log 0 = 0: the loss
    and its gradient stay finite where teacher and student both have -inf logits (a class masked out
    of both); they are +inf only where the KL is (the other side gives that class probability > 0).
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
        weight, log_ratio = log_p.exp(), -log_q
    elif kind == "reverse":
        weight, log_ratio = log_q.exp(), log_q - log_p
    else:
        raise ValueError(f"kind must be 'forward' or 'reverse', got {kind!r}")
    # 0 * log 0 = 0: where the weighting distribution is 0, the term is 0, and so is its gradient (the
    # other factor is zeroed first, so that backward never multiplies 0 by inf or nan).
    support = weight > 0
    loss = (weight * torch.where(support, log_ratio, torch.zeros_like(log_ratio))).sum(-1).mean()
    return loss * tau**2 if scale_tau2 else loss


def distillation_terms(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    tau: float,
    kind: str = "forward",
    scale_tau2: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(alpha * CE + (1 - alpha) * KD, the KD term): the loss of `distillation_loss` and its KD term
    (None without a teacher or at alpha = 1, where KD is not computed)."""
    ce = F.cross_entropy(student_logits.float(), targets)
    if teacher_logits is None or alpha >= 1:
        return ce, None
    kd = kd_loss(student_logits, teacher_logits, tau, kind, scale_tau2)
    return (kd if alpha <= 0 else alpha * ce + (1 - alpha) * kd), kd


def distillation_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    alpha: float,
    tau: float,
    kind: str = "forward",
    scale_tau2: bool = False,
) -> torch.Tensor:
    """alpha * CE + (1 - alpha) * KD over [N, C] logits and [N] targets; without a teacher it is plain CE."""
    return distillation_terms(student_logits, targets, teacher_logits, alpha, tau, kind, scale_tau2)[0]
