import math

import pytest

import torch
import torch.nn.functional as F

from progdistill.losses import distillation_loss, distillation_terms, kd_loss


def test_tau_zero_is_argmax_cross_entropy():
    s, t = torch.randn(16, 5), torch.randn(16, 5) * 100
    assert torch.allclose(kd_loss(s, t, 0.0), F.cross_entropy(s, t.argmax(-1)))


def test_tiny_tau_has_no_overflow_and_tends_to_argmax():
    s, t = torch.randn(16, 5), torch.randn(16, 5) * 1e4
    hard = kd_loss(s, t, 0.0)
    soft = kd_loss(s * 1e-4, t, 1e-4)  # student logits on the same temperature scale
    assert torch.isfinite(soft) and torch.allclose(soft, hard, atol=1e-4)


def test_forward_kl_gradient_matches_kl_divergence():
    s = torch.randn(8, 4, requires_grad=True)
    t = torch.randn(8, 4)
    tau = 2.0
    kd_loss(s, t, tau).backward()
    g1 = s.grad.clone()
    s.grad = None
    p = F.softmax(t / tau, -1)
    F.kl_div(F.log_softmax(s / tau, -1), p, reduction="batchmean").backward()
    assert torch.allclose(g1, s.grad, atol=1e-6)


def test_reverse_kl_is_computed_on_probabilities():
    s, t = torch.randn(8, 4), torch.randn(8, 4)
    q, p = F.softmax(s, -1), F.softmax(t, -1)
    expected = (q * (q.log() - p.log())).sum(-1).mean()
    assert torch.allclose(kd_loss(s, t, 1.0, kind="reverse"), expected, atol=1e-6)
    assert kd_loss(t, t, 1.0, kind="reverse").abs() < 1e-6


def test_tau_squared_scaling_and_mixture():
    s, t, y = torch.randn(8, 3), torch.randn(8, 3), torch.randint(0, 3, (8,))
    assert math.isclose(float(kd_loss(s, t, 3.0, scale_tau2=True)), 9 * float(kd_loss(s, t, 3.0)), rel_tol=1e-5)
    mix = distillation_loss(s, y, t, alpha=0.25, tau=1.0)
    expected = 0.25 * F.cross_entropy(s, y) + 0.75 * kd_loss(s, t, 1.0)
    assert torch.allclose(mix, expected)
    assert torch.allclose(distillation_loss(s, y, None, 0.0, 0.0), F.cross_entropy(s, y))


def test_tau_zero_accepts_the_teachers_argmax_labels():
    student, teacher = torch.randn(64, 8), torch.randn(64, 8)
    assert torch.equal(kd_loss(student, teacher, tau=0.0), kd_loss(student, teacher.argmax(-1), tau=0.0))


INF = float("inf")


@pytest.mark.parametrize("kind", ["forward", "reverse"])
@pytest.mark.parametrize("scale_tau2", [False, True])
def test_kd_is_finite_where_teacher_and_student_are_both_minus_inf(kind, scale_tau2):
    """0 * log 0 = 0: a class both give probability 0 adds nothing (before: NaN loss and gradients)."""
    student = torch.tensor([[0.0, math.log(3.0), -INF]])
    teacher = torch.tensor([[0.0, 0.0, -INF]])
    # by hand, tau = 1: p_T = (1/2, 1/2, 0), q_S = (1/4, 3/4, 0)
    by_hand = math.log(4) - math.log(3) / 2 if kind == "forward" else 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert float(kd_loss(student, teacher, 1.0, kind, scale_tau2)) == pytest.approx(by_hand, rel=1e-6)
    # at tau = 2: the same loss and gradient as without the excluded class, and no gradient on it
    with_class = student.clone().requires_grad_()
    without = student[:, :2].clone().requires_grad_()
    loss = kd_loss(with_class, teacher, 2.0, kind, scale_tau2)
    reference = kd_loss(without, teacher[:, :2], 2.0, kind, scale_tau2)
    loss.backward()
    reference.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.isfinite(with_class.grad).all() and with_class.grad[0, 2] == 0
    assert torch.allclose(with_class.grad[:, :2], without.grad)
    if scale_tau2:
        assert loss.item() == pytest.approx(4 * kd_loss(student, teacher, 2.0, kind).item(), rel=1e-6)


def test_kd_matches_kl_div_where_everything_is_finite():
    s, t, tau = torch.randn(16, 6), torch.randn(16, 6), 1.5
    log_q, log_p = F.log_softmax(s / tau, -1), F.log_softmax(t / tau, -1)
    entropy = -(log_p.exp() * log_p).sum(-1).mean()
    forward = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) + entropy  # the cross-entropy form
    reverse = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    assert torch.allclose(kd_loss(s, t, tau), forward, atol=1e-6)
    assert torch.allclose(kd_loss(s, t, tau, "reverse"), reverse, atol=1e-6)
    assert torch.allclose(kd_loss(s, t, tau, "reverse", scale_tau2=True), tau**2 * reverse, atol=1e-6)


def test_kd_is_infinite_only_where_the_kl_is():
    student, teacher = torch.tensor([[0.0, -INF]]), torch.tensor([[0.0, 0.0]])
    assert kd_loss(student, teacher, 1.0) == INF  # the teacher puts mass where the student has none
    assert torch.isfinite(kd_loss(student, teacher, 1.0, "reverse"))  # KL(q || p) with q's support inside p's
    assert kd_loss(teacher, student, 1.0, "reverse") == INF


def _forward_kd_by_hand(s, t, tau):
    """sum_v p_T(v) * (-log q_S(v)), averaged over rows, written out with exp / sum / log."""
    p = torch.exp(t / tau) / torch.exp(t / tau).sum(-1, keepdim=True)
    log_q = s / tau - torch.log(torch.exp(s / tau).sum(-1, keepdim=True))
    return -(p * log_q).sum(-1).mean()


def test_defaults_are_argmax_ce_forward_kl_and_no_tau_squared():
    """The documented defaults: tau 0 (argmax CE), kind 'forward', scale_tau2 False; scale_tau2=True
    multiplies the KD term (only) by tau^2."""
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.randint(0, 4, (6,))
    assert torch.allclose(kd_loss(s, t), F.cross_entropy(s, t.argmax(-1)))
    ce, kd = F.cross_entropy(s, y), _forward_kd_by_hand(s, t, 2.0)
    assert torch.allclose(distillation_loss(s, y, t, 0.25, 2.0), 0.25 * ce + 0.75 * kd, atol=1e-6)
    assert torch.allclose(distillation_loss(s, y, t, 0.25, 2.0, scale_tau2=True), 0.25 * ce + 0.75 * 4 * kd,
                          atol=1e-6)
    loss, term = distillation_terms(s, y, t, 0.25, 2.0)
    assert torch.allclose(term, kd, atol=1e-6) and torch.allclose(loss, 0.25 * ce + 0.75 * kd, atol=1e-6)
    loss, term = distillation_terms(s, y, t, 0.25, 2.0, scale_tau2=True)
    assert torch.allclose(term, 4 * kd, atol=1e-6) and torch.allclose(loss, 0.25 * ce + 3 * kd, atol=1e-6)


def test_kd_term_is_absent_at_alpha_one_and_alone_at_alpha_zero():
    """alpha = 1: plain CE and no KD term; alpha = 0: the KD term alone, even where CE is infinite (the
    target class masked out of both models: 0 * inf would make the mixture nan). Hand value: both
    models put 1/2 on classes 0 and 1, so KD = -(1/2 log 1/2 + 1/2 log 1/2) = log 2."""
    torch.manual_seed(1)
    s, t, y = torch.randn(5, 3), torch.randn(5, 3), torch.randint(0, 3, (5,))
    loss, term = distillation_terms(s, y, t, 1.0, 2.0)
    assert term is None and torch.equal(loss, F.cross_entropy(s, y))
    masked = torch.tensor([[0.0, 0.0, -math.inf]])
    loss, term = distillation_terms(masked, torch.tensor([2]), masked, 0.0, 1.0)
    assert math.isinf(F.cross_entropy(masked, torch.tensor([2])).item())
    assert loss.item() == pytest.approx(math.log(2)) and term.item() == pytest.approx(math.log(2))


def test_bad_tau_and_kind_are_clear_errors():
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"^tau must be >= 0, got -1\.0$"):
        kd_loss(s, t, -1.0)
    with pytest.raises(ValueError, match=r"^reverse KL needs tau > 0 \(a one-hot teacher has log p_T = -inf"):
        kd_loss(s, t, 0.0, "reverse")
    with pytest.raises(ValueError, match=r"^kind must be 'forward' or 'reverse', got 'sideways'$"):
        kd_loss(s, t, 1.0, "sideways")
