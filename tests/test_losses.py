import math

import pytest

import torch
import torch.nn.functional as F

from progdistill.losses import distillation_loss, kd_loss


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
