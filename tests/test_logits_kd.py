"""Logits KD under class imbalance (issue 13): the class-balanced term, the default, the diagnostics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relkd_bench import ops
from relkd_bench.config import load_config
from relkd_bench.losses import DIAGNOSE_ENV, LogitsKD, RelKDLoss, class_balanced_kd, logit_diagnostics

# Measured on a quick-preset training batch (seed 1, held-out BIDMC): the teacher's logit gap
# z_fg − z_bg is +4.2 inside the prostate and −6.8 outside; an untrained ENet sits near −0.7 everywhere.
TEACHER_GAP_FG, TEACHER_GAP_BG, STUDENT_GAP = 4.2, -6.8, -0.7


def _pixel_kl(zs: torch.Tensor, zt: torch.Tensor, t: float) -> torch.Tensor:
    """T² · KL(p_t ‖ p_s) per pixel, ``[B, H, W]``."""
    log_ps, log_pt = F.log_softmax(zs / t, 1), F.log_softmax(zt / t, 1)
    return t**2 * (log_pt.exp() * (log_pt - log_ps)).sum(1)


def _imbalanced_batch(fg_side: int = 4, size: int = 32, batch: int = 4):
    """Labels with a ``fg_side``² foreground square per sample (1.6 % of 32×32 for side 4) and logits
    with the measured gaps."""
    y = torch.zeros(batch, 1, size, size, dtype=torch.long)
    y[:, :, 10:10 + fg_side, 12:12 + fg_side] = 1
    gap_t = torch.where(y[:, 0] > 0, TEACHER_GAP_FG, TEACHER_GAP_BG)
    zt = torch.stack([-gap_t / 2, gap_t / 2], 1).double()
    zs = torch.stack([torch.full_like(gap_t, -STUDENT_GAP / 2), torch.full_like(gap_t, STUDENT_GAP / 2)], 1)
    return zs.double().requires_grad_(True), zt, y


def test_class_balanced_kd_is_the_mean_of_the_per_class_means():
    torch.manual_seed(0)
    zs = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    zt = 3 * torch.randn(2, 3, 5, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 1, 5, 6))  # class 2 absent: it does not count
    got = class_balanced_kd(zs, zt, y, 2.0)
    kl = _pixel_kl(zs, zt, 2.0)
    want = torch.stack([kl[y[:, 0] == k].mean() for k in (0, 1)]).mean()
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got, zs)
    (g_want,) = torch.autograd.grad(want, zs)
    torch.testing.assert_close(g_got, g_want)


def test_class_balanced_kd_with_one_class_is_the_pixel_mean():
    torch.manual_seed(1)
    zs, zt = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(2, 2, 4, 4, dtype=torch.float64)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    torch.testing.assert_close(class_balanced_kd(zs, zt, y, 4.0), ops.kd_logits_loss(zs, zt, 4.0))


def test_class_balanced_kd_rejects_labels_of_another_size():
    with pytest.raises(ValueError, match="do not match"):
        class_balanced_kd(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 2, 2), 1.0)
    with pytest.raises(ValueError, match="labels"):
        LogitsKD(class_balanced=True)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def _push(term: torch.Tensor, zs: torch.Tensor, fg: torch.Tensor) -> tuple[float, float]:
    """−Σ ∂term/∂gap over foreground and background pixels (> 0: towards foreground)."""
    (g,) = torch.autograd.grad(term, zs)
    g_gap = (g[:, 1] - g[:, 0]) / 2
    return float(-(g_gap * fg).sum()), float(-(g_gap * ~fg).sum())


def test_plain_pixel_mean_kd_at_t4_swamps_the_foreground():
    """The collapse's mechanism on one batch: the plain T = 4 term pulls the background about 4× harder
    than cross-entropy does and gives the foreground under 2 % of its pull."""
    zs, zt, y = _imbalanced_batch()
    fg = y[:, 0] > 0
    kd_fg, kd_bg = _push(ops.kd_logits_loss(zs, zt, 4.0), zs, fg)
    _, ce_bg = _push(F.cross_entropy(zs, y[:, 0]), zs, fg)
    assert kd_bg < 3.5 * ce_bg < 0 < kd_fg < 0.02 * -kd_bg


def test_default_logits_term_gives_the_foreground_a_say():
    """The quick preset's λ1 term (what RelKD and the LM ablation train with) must pull the foreground
    pixels towards foreground with at least half the strength it pulls the background towards
    background: with the plain pixel mean it was 1.6 % at T = 4 and the students ended all-background."""
    cfg = load_config("quick", ["distill.lambda_km=0", "distill.lambda_aa=0"]).distill
    term = RelKDLoss(cfg, nn.Identity(), nn.Identity(), "enet").logits
    zs, zt, y = _imbalanced_batch()
    push_fg, push_bg = _push(cfg.lambda_logits * term(zs, zt, y), zs, y[:, 0] > 0)
    assert push_fg > 0.5 * -push_bg > 0


def test_diagnostics_are_opt_in_and_do_not_change_the_gradients(monkeypatch):
    cfg = load_config("quick", ["distill.lambda_km=0", "distill.aa_variant=cosine"]).distill
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 8, 3, padding=1)
    x = torch.randn(2, 1, 16, 16)
    zt = torch.randn(2, 2, 16, 16)
    ft = {"decoder": torch.randn(2, 4, 16, 16)}
    _, _, y = _imbalanced_batch(fg_side=3, size=16, batch=2)

    def step(diagnose: str) -> tuple[dict, torch.Tensor]:
        monkeypatch.setenv(DIAGNOSE_ENV, diagnose)
        obj = RelKDLoss(cfg, nn.Identity(), nn.Identity(), "enet")
        conv.zero_grad()
        f = F.relu(conv(x))
        loss, parts = obj(f[:, :2], y, {"decoder": f}, zt, ft)
        loss.backward()
        return parts, conv.weight.grad.clone()

    plain, g_plain = step("0")
    diag, g_diag = step("1")
    assert not any(k.startswith("diag_") for k in plain)
    for key in ("diag_fg_s", "diag_fg_t", "diag_tscale", "diag_push_lm_fg", "diag_push_dice_fg",
                "diag_push_ce_bg", "diag_aa_zero_px", "diag_aa_gmax_zero"):
        assert key in diag
    torch.testing.assert_close(g_diag, g_plain, rtol=0, atol=0)
    monkeypatch.setenv(DIAGNOSE_ENV, "yes")
    with pytest.raises(ValueError, match=DIAGNOSE_ENV):
        RelKDLoss(cfg, nn.Identity(), nn.Identity(), "enet")


def test_logit_diagnostics_signs():
    zs, zt, y = _imbalanced_batch()
    out = logit_diagnostics(zs, y, zt, {"ce": F.cross_entropy(zs, y[:, 0])})
    assert out["diag_push_ce_fg"] > 0 > out["diag_push_ce_bg"]  # CE raises fg, lowers bg
    assert out["diag_gap_t_fg"] == pytest.approx(TEACHER_GAP_FG)
    assert out["diag_gap_s_bg"] == pytest.approx(STUDENT_GAP)
    assert out["diag_fg_t"] == pytest.approx(float((y > 0).float().mean()))
