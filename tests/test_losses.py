"""Losses: one signature, the anchors' formulas, warmup by training progress."""

import math

import pytest
import torch
import torch.nn.functional as F

from w2sweep.losses import LOSSES, entropy, kl, logconf, loss_defaults, make_loss, product, window, xent

LOGITS = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-0.5, 0.4], [-2.0, 1.5], [0.0, 0.2], [1.0, 1.3]])
SOFT = torch.tensor([0.1, 0.7, 0.4, 0.95, 1.0, 0.0])


def manual_ce(logits, targets):
    """CE(targets [B, 2], softmax(logits)), batch mean."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def two_class(y):
    return torch.stack([1 - y, y], dim=-1)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_has_one_signature_and_gives_a_differentiable_scalar(name):
    logits = LOGITS.clone().requires_grad_(True)
    for progress in (0.0, 0.05, 0.5, 1.0):
        loss = make_loss(name)(logits, SOFT, progress=progress)
        assert loss.shape == () and math.isfinite(loss.item())
        (grad,) = torch.autograd.grad(loss, logits)
        assert grad.shape == logits.shape and torch.isfinite(grad).all()
    assert LOSSES[name].__doc__ and "progress" not in loss_defaults(name)


def test_xent_is_cross_entropy_against_soft_targets():
    assert torch.allclose(xent(LOGITS, SOFT, progress=0.3), manual_ce(LOGITS, two_class(SOFT)))
    hard = torch.tensor([0, 1, 0, 1, 1, 0])
    assert torch.allclose(xent(LOGITS, hard.float(), progress=0.0), F.cross_entropy(LOGITS, hard))


def test_logconf_is_xent_before_warmup_and_mixes_balanced_hardened_predictions_after():
    assert torch.allclose(logconf(LOGITS, SOFT, progress=0.0), xent(LOGITS, SOFT))
    # After warmup alpha = aux_coef. The weak labels' mean is 3.15/6 = 0.525: the quantile threshold
    # hardens the 3 examples with the largest P(1) to class 1 (rows 3, 2, 5).
    p1 = torch.softmax(LOGITS, dim=-1)[:, 1]
    hard_one = torch.zeros(6)
    hard_one[p1.argsort(descending=True)[:3]] = 1
    for aux in (0.5, 1.0):
        expected = manual_ce(LOGITS, (1 - aux) * two_class(SOFT) + aux * two_class(hard_one))
        got = logconf(LOGITS, SOFT, progress=0.5, aux_coef=aux, warmup_frac=0.1)
        assert torch.allclose(got, expected, atol=1e-6), (aux, got, expected)
    # Halfway through warmup, alpha is half of aux_coef.
    half = manual_ce(LOGITS, 0.75 * two_class(SOFT) + 0.25 * two_class(hard_one))
    assert torch.allclose(logconf(LOGITS, SOFT, progress=0.05, aux_coef=0.5, warmup_frac=0.1), half, atol=1e-6)


def test_logconf_lets_a_confident_student_overrule_wrong_weak_labels():
    # Weak labels say the opposite of what the student confidently predicts (balanced batch): xent
    # pushes the student toward the labels, logconf with a large alpha pulls it the other way.
    logits = torch.tensor([[0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [-0.5, 0.5]], requires_grad=True)
    wrong = torch.tensor([1.0, 0.0, 1.0, 0.0])
    (g_xent,) = torch.autograd.grad(xent(logits, wrong), logits)
    (g_conf,) = torch.autograd.grad(logconf(logits, wrong, progress=1.0, aux_coef=0.9), logits)
    toward_own = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])  # raise own class
    assert (-(g_xent * toward_own).sum()) < 0 < (-(g_conf * toward_own).sum())


def test_product_loss_targets_the_normalised_product_of_labels_and_predictions():
    p = torch.softmax(LOGITS, dim=-1)
    q = two_class(SOFT) * p
    q = q / q.sum(-1, keepdim=True)
    assert torch.allclose(product(LOGITS, SOFT, progress=0.2), manual_ce(LOGITS, q), atol=1e-6)
    # beta = 0 ignores the student: plain xent.
    assert torch.allclose(product(LOGITS, SOFT, progress=0.2, beta=0.0), xent(LOGITS, SOFT), atol=1e-6)


def test_entropy_loss_adds_the_students_entropy_with_warmup():
    log_p = F.log_softmax(LOGITS, dim=-1)
    h = -(log_p.exp() * log_p).sum(-1).mean()
    assert torch.allclose(entropy(LOGITS, SOFT, progress=0.0), xent(LOGITS, SOFT))
    expected = 0.5 * xent(LOGITS, SOFT) + 0.5 * h
    assert torch.allclose(entropy(LOGITS, SOFT, progress=1.0, aux_coef=0.5), expected, atol=1e-6)


def test_window_loss_only_counts_uncertain_examples():
    p_max = torch.softmax(LOGITS, dim=-1).max(-1).values
    unsure = p_max < 0.65
    per_example = -(two_class(SOFT) * F.log_softmax(LOGITS, dim=-1)).sum(-1)
    expected = per_example[unsure].sum() / len(LOGITS)
    assert 0 < unsure.sum() < len(LOGITS)
    assert torch.allclose(window(LOGITS, SOFT, progress=0.0, radius=0.15), expected)
    assert torch.allclose(window(LOGITS, SOFT, progress=0.0, radius=0.5), xent(LOGITS, SOFT))
    assert window(LOGITS, SOFT, progress=0.0, radius=0.0).item() == 0.0


def test_kl_is_xent_minus_label_entropy_with_the_same_gradients():
    t = two_class(SOFT)
    label_entropy = -(t * torch.log(t.clamp_min(1e-12))).sum(-1).mean()
    assert torch.allclose(kl(LOGITS, SOFT), xent(LOGITS, SOFT) - label_entropy, atol=1e-6)
    a = LOGITS.clone().requires_grad_(True)
    b = LOGITS.clone().requires_grad_(True)
    (ga,) = torch.autograd.grad(kl(a, SOFT), a)
    (gb,) = torch.autograd.grad(xent(b, SOFT), b)
    assert torch.allclose(ga, gb, atol=1e-6)
    assert kl(torch.log(t.clamp_min(1e-9)), SOFT).item() == pytest.approx(0.0, abs=1e-5)


def test_make_loss_binds_options_and_names_what_is_wrong():
    bound = make_loss("logconf", {"aux_coef": 1.0})
    assert torch.allclose(bound(LOGITS, SOFT, progress=1.0), logconf(LOGITS, SOFT, progress=1.0, aux_coef=1.0))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss("hinge")
    with pytest.raises(ValueError, match="no option 'radius'"):
        make_loss("logconf", {"radius": 0.1})
    with pytest.raises(ValueError, match=r"aux_coef=1.5 is outside \[0.0, 1.0\]"):
        make_loss("entropy", {"aux_coef": 1.5})
    assert loss_defaults("logconf") == {"aux_coef": 0.5, "warmup_frac": 0.1}
    assert loss_defaults("xent") == {} and loss_defaults("kl") == {}
