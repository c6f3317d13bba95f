"""kd_logits_loss: Logits Module (LM), DESIGN §3.3.

``loss = T² / (B·H·W) Σ_pixels Σ_k p_t,k (log p_t,k − log p_s,k)`` with p = softmax(z / T) over the
class dimension: the pixel-wise KL between softened teacher and student class probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import use_native
from ._checks import as_float, check_tensor, fake_one_device, raise_if_not_finite

OP = "kd_logits_loss"


def kd_logits_loss_reference(zs: torch.Tensor, zt: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """The definition, in plain PyTorch. zs, zt: [B, K, H, W] logits → scalar."""
    log_ps = F.log_softmax(zs / temperature, dim=1)
    log_pt = F.log_softmax(zt / temperature, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1)  # [B, H, W]
    return temperature**2 * kl.mean()


def kd_logits_loss(
    zs: torch.Tensor, zt: torch.Tensor, temperature: float = 4.0, *, check_finite: bool = True
) -> torch.Tensor:
    """Pixel-wise softened-KL distillation of student logits towards teacher logits.

    Args:
        zs: student logits [B, K, H, W].
        zt: teacher logits [B, K, H, W] (same shape, dtype and device).
        temperature: softmax temperature T, in [1e-3, 1e3] (outside it the float64 sums lose the loss:
            their rounding grows like eps·T²); the loss carries the usual T² factor.
        check_finite: raise ValueError when an input holds NaN/Inf (checked on the result).

    Returns:
        Scalar loss ≥ 0 (a KL divergence; a rounding below 0 is clamped), differentiable w.r.t. zs and zt.

    Raises:
        TypeError: an argument of the wrong Python type, or tensors of a wrong dtype.
        ValueError: wrong shapes, devices or values (the op's own checks, csrc/common/checks.cpp).
    """
    check_tensor(OP, "zs", zs)
    check_tensor(OP, "zt", zt)
    temperature = as_float(OP, "temperature", temperature)
    if use_native(OP, zs, zt):
        return torch.ops.relkd.kd_logits_loss(zs, zt, temperature, check_finite)
    loss = kd_logits_loss_reference(zs, zt, temperature)
    if check_finite:
        raise_if_not_finite(OP, loss, zs=zs, zt=zt)
    return loss


def _register() -> None:
    @torch.library.register_fake("relkd::kd_logits_loss")
    def _(zs, zt, temperature, check_finite):
        fake_one_device(OP, zs, zt)
        return zs.new_empty(())

    @torch.library.register_fake("relkd::kd_logits_loss_backward")
    def _(grad, zs, zt, temperature, output_mask):
        fake_one_device(OP + "_backward", grad, zs, zt)
        gs = zs.new_empty(zs.shape) if output_mask[0] else None
        return gs, zt.new_empty(zt.shape) if output_mask[1] else None

    def setup_context(ctx, inputs, output):
        zs, zt, temperature, _ = inputs
        ctx.save_for_backward(zs, zt)
        ctx.temperature = temperature

    def backward(ctx, grad):
        # Only the gradients autograd asks for: distillation detaches the teacher, and its gradient would
        # cost a third of the backward's memory traffic.
        mask = list(ctx.needs_input_grad[:2])
        if not any(mask):
            return None, None, None, None
        zs, zt = ctx.saved_tensors
        gs, gt = torch.ops.relkd.kd_logits_loss_backward(grad, zs, zt, ctx.temperature, mask)
        return gs, gt, None, None

    torch.library.register_autograd("relkd::kd_logits_loss", backward, setup_context=setup_context)
