"""kd_logits_loss: Logits Module (LM), DESIGN §3.3.

``loss = T² / (B·H·W) Σ_pixels Σ_k p_t,k (log p_t,k − log p_s,k)`` with p = softmax(z / T) over the
class dimension: the pixel-wise KL between softened teacher and student class probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import use_native
from ._checks import check_features, raise_if_not_finite

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
        zt: teacher logits [B, K, H, W].
        temperature: softmax temperature T > 0; the loss carries the usual T² factor.
        check_finite: raise ValueError when an input holds NaN/Inf (checked on the result).

    Returns:
        Scalar loss, differentiable w.r.t. zs and zt.
    """
    check_features(OP, zs, zt, ("zs", "zt"))
    if zs.shape != zt.shape:
        raise ValueError(
            f"{OP}: zs and zt must have the same shape [B, K, H, W] (class counts {zs.shape[1]} vs "
            f"{zt.shape[1]}), got {list(zs.shape)} and {list(zt.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"{OP}: temperature must be positive, got {temperature}")
    if use_native(OP, zs, zt):
        return torch.ops.relkd.kd_logits_loss(zs, zt, float(temperature), check_finite)
    loss = kd_logits_loss_reference(zs, zt, temperature)
    if check_finite:
        raise_if_not_finite(OP, loss, zs=zs, zt=zt)
    return loss


def _register() -> None:
    @torch.library.register_fake("relkd::kd_logits_loss")
    def _(zs, zt, temperature, check_finite):
        return zs.new_empty(())

    @torch.library.register_fake("relkd::kd_logits_loss_backward")
    def _(grad, zs, zt, temperature):
        return zs.new_empty(zs.shape), zt.new_empty(zt.shape)

    def setup_context(ctx, inputs, output):
        zs, zt, temperature, _ = inputs
        ctx.save_for_backward(zs, zt)
        ctx.temperature = temperature

    def backward(ctx, grad):
        zs, zt = ctx.saved_tensors
        gs, gt = torch.ops.relkd.kd_logits_loss_backward(grad, zs, zt, ctx.temperature)
        return gs, gt, None, None

    torch.library.register_autograd("relkd::kd_logits_loss", backward, setup_context=setup_context)
