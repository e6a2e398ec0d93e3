"""span_loss (label smoothing over valid positions) and the R-Drop symmetric KL."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import window_mask
from squad_qa.training.losses import rdrop_kl, rdrop_span_loss, span_loss


def _batch(seed=0, B=4, T=12):
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(B, T, generator=g) * 3
    end = torch.randn(B, T, generator=g) * 3
    sp = torch.tensor([0, 6, 5, 5])[:B]
    ep = torch.tensor([0, 8, 7, 5])[:B]
    return start, end, sp, ep, window_mask([12, 10, 9, 7][:B], T, context_start=5)


def test_valid_mask_is_context_and_cls_only():
    *_, mask = _batch()
    assert mask[1].nonzero().flatten().tolist() == [0, 5, 6, 7, 8]
    assert mask[3].nonzero().flatten().tolist() == [0, 5]


def test_no_smoothing_is_exactly_cross_entropy():
    start, end, sp, ep, mask = _batch()
    expected = (F.cross_entropy(start, sp) + F.cross_entropy(end, ep)) / 2
    assert torch.equal(span_loss(start, end, sp, ep), expected)
    assert torch.equal(span_loss(start, end, sp, ep, valid_mask=mask, label_smoothing=0.0), expected)


def test_smoothing_matches_hand_computation_and_ignores_masked_positions():
    start, end, sp, ep, mask = _batch()
    eps = 0.2

    def hand(logits, targets):
        total = 0.0
        for r in range(logits.shape[0]):
            logp = torch.log_softmax(logits[r].double(), -1)
            valid = mask[r].nonzero().flatten().tolist()
            q = torch.zeros_like(logp)
            q[valid] = eps / len(valid)
            q[targets[r]] += 1 - eps
            assert q[~mask[r]].sum() == 0  # no smoothing mass on question/SEP/padding
            total += -(q * logp).sum().item()
        return total / logits.shape[0]

    got = span_loss(start, end, sp, ep, valid_mask=mask, label_smoothing=eps)
    assert math.isclose(got.item(), (hand(start, sp) + hand(end, ep)) / 2, rel_tol=1e-6)


def test_smoothing_without_mask_equals_torch_label_smoothing():
    start, end, sp, ep, mask = _batch()
    full = torch.ones_like(mask)
    expected = (F.cross_entropy(start, sp, label_smoothing=0.1) + F.cross_entropy(end, ep, label_smoothing=0.1)) / 2
    assert torch.allclose(span_loss(start, end, sp, ep, label_smoothing=0.1), expected, rtol=0, atol=1e-6)
    assert torch.allclose(span_loss(start, end, sp, ep, full, 0.1), expected, rtol=0, atol=1e-6)


def test_smoothed_gradient_is_finite_and_zero_only_through_softmax_on_masked():
    start, end, sp, ep, mask = _batch()
    start.requires_grad_(True)
    end.requires_grad_(True)
    span_loss(start, end, sp, ep, mask, 0.3).backward()
    assert torch.isfinite(start.grad).all() and torch.isfinite(end.grad).all()
    # d loss / d logit_j = (p_j - q_j) / (2B): at masked positions q_j = 0 so the grad equals p_j / (2B) > 0
    p = torch.softmax(start.detach(), -1)
    assert torch.allclose(start.grad[~mask], p[~mask] / (2 * start.shape[0]), atol=1e-7)


@pytest.mark.parametrize("bad_start,needle", [(12, "outside [0, 12)"), (-1, "outside [0, 12)"), (2, "not a valid")])
def test_bad_targets_raise(bad_start, needle):
    start, end, sp, ep, mask = _batch()
    sp = sp.clone()
    sp[2] = bad_start
    with pytest.raises(ValueError, match=r"row 2: start_position") as exc:
        span_loss(start, end, sp, ep, valid_mask=mask, label_smoothing=0.1)
    assert needle in str(exc.value)


def test_shape_mismatch_and_bad_epsilon_raise():
    start, end, sp, ep, mask = _batch()
    with pytest.raises(ValueError, match="valid_mask shape"):
        span_loss(start, end, sp, ep, mask[:, :5])
    with pytest.raises(ValueError, match="end_positions must have shape"):
        span_loss(start, end, sp, ep[:2])
    with pytest.raises(ValueError, match="label_smoothing"):
        span_loss(start, end, sp, ep, label_smoothing=1.0)


def test_rdrop_kl_properties():
    a, b, *_, mask = _batch(0)
    assert rdrop_kl(a, a.clone(), mask).item() == 0.0
    assert rdrop_kl(a, a + 5.0, mask).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant softmax
    kl_ab, kl_ba = rdrop_kl(a, b, mask), rdrop_kl(b, a, mask)
    assert kl_ab.item() > 0
    assert torch.allclose(kl_ab, kl_ba, rtol=0, atol=1e-7)
    # hand computation for row-wise masked distributions
    total = 0.0
    for r in range(a.shape[0]):
        pa = torch.softmax(a[r][mask[r]].double(), -1)
        pb = torch.softmax(b[r][mask[r]].double(), -1)
        total += 0.5 * ((pa * (pa / pb).log()).sum() + (pb * (pb / pa).log()).sum()).item()
    assert kl_ab.item() == pytest.approx(total / a.shape[0], rel=1e-5)


def test_rdrop_kl_ignores_masked_positions_and_has_finite_grad():
    a, b, *_, mask = _batch(1)
    a2, b2 = a.clone(), b.clone()
    a2[~mask] = torch.randn(int((~mask).sum())) * 100
    b2[~mask] = -1e4
    assert torch.allclose(rdrop_kl(a, b, mask), rdrop_kl(a2, b2, mask), rtol=0, atol=1e-6)
    assert not torch.allclose(rdrop_kl(a, b), rdrop_kl(a2, b2))  # without mask they would matter
    a.requires_grad_(True)
    rdrop_kl(a, b, mask).backward()
    assert torch.isfinite(a.grad).all() and (a.grad[~mask] == 0).all()


def test_rdrop_span_loss_formula():
    sa, ea, sp, ep, mask = _batch(2)
    sb, eb, *_ = _batch(3)
    got = rdrop_span_loss(sa, ea, sb, eb, sp, ep, mask, alpha=4.0, label_smoothing=0.1)
    ce = 0.5 * (span_loss(sa, ea, sp, ep, mask, 0.1) + span_loss(sb, eb, sp, ep, mask, 0.1))
    kl = 0.5 * (rdrop_kl(sa, sb, mask) + rdrop_kl(ea, eb, mask))
    assert torch.allclose(got, ce + 4.0 * kl, rtol=0, atol=1e-6)
