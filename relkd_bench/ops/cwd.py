"""cwd_loss: channel-wise distillation (CWD; Shu et al., "Channel-wise Knowledge Distillation for Dense
Prediction", ICCV 2021).

Each (sample, channel) map of ys, yt ∈ R^{B×C×H×W} becomes a distribution over its N = H·W pixels,
p_{b,c,i} = softmax_i(y_{b,c,i} / τ), and

    loss = τ² / (B·C) · Σ_{b,c} KL(p_t,b,c ‖ p_s,b,c),   KL = Σ_i p_t,i (log p_t,i − log p_s,i)

(the paper's Eq. 3–4 with its τ² factor, averaged over channels and samples as in the authors'
mmrazor/mmsegmentation code). Gradients, with s = grad·τ/(B·C):

    ∂loss/∂ys_i = s · (p_s,i − p_t,i),   ∂loss/∂yt_i = s · p_t,i · (log p_t,i − log p_s,i − KL_row).

The native op reads ys and yt once in the forward (online log-sum-exp over chunks of each row: with z = y/τ,
KL_row = Σ_i p_t,i (z_t,i − z_s,i) − lse(z_t) + lse(z_s)) and keeps per-row statistics (float64 [B, C, 3]:
lse_s, lse_t, KL_row) so that the backward is one elementwise pass. See docs/kernels.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import use_native
from ._checks import as_float, check_tensor, dim_size, fake_one_device, raise_if_not_finite

OP = "cwd_loss"


def cwd_loss_reference(ys: torch.Tensor, yt: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The definition, in plain PyTorch. ys, yt: [B, C, H, W] maps of one shape → scalar."""
    if ys.shape != yt.shape:
        raise ValueError(f"{OP}: ys and yt must have one shape, got {list(ys.shape)} and {list(yt.shape)}")
    log_ps = F.log_softmax(ys.flatten(2) / temperature, dim=2)
    log_pt = F.log_softmax(yt.flatten(2) / temperature, dim=2)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(2)  # [B, C]
    return temperature**2 * kl.mean()


def cwd_loss(
    ys: torch.Tensor, yt: torch.Tensor, temperature: float = 1.0, *, check_finite: bool = True
) -> torch.Tensor:
    """Channel-wise distillation: per (sample, channel), the KL between the teacher's and the student's
    softmax over the pixels.

    Args:
        ys: student maps [B, C, H, W] (e.g. logits).
        yt: teacher maps [B, C, H, W] (same shape, dtype and device; distillation passes it detached).
        temperature: softmax temperature τ, in [1e-3, 1e3]; the loss carries the τ² factor.
        check_finite: raise ValueError when an input holds NaN/Inf (checked on the result).

    Returns:
        Scalar loss ≥ 0 (a mean of KL divergences; a rounding below 0 is clamped per row), differentiable
        w.r.t. ys and yt.

    Raises:
        TypeError: an argument of the wrong Python type, or tensors of a wrong dtype.
        ValueError: wrong shapes, devices or values (the op's own checks, csrc/common/checks.cpp).
    """
    check_tensor(OP, "ys", ys)
    check_tensor(OP, "yt", yt)
    temperature = as_float(OP, "temperature", temperature)
    if use_native(OP, ys, yt):
        return torch.ops.relkd.cwd_loss(ys, yt, temperature, check_finite)[0]
    loss = cwd_loss_reference(ys, yt, temperature)
    if check_finite:
        raise_if_not_finite(OP, loss, ys=ys, yt=yt)
    return loss


def _register() -> None:
    @torch.library.register_fake("relkd::cwd_loss")
    def _(ys, yt, temperature, check_finite):
        fake_one_device(OP, ys, yt)
        b, c = dim_size(ys, 0), dim_size(ys, 1)
        return ys.new_empty(()), ys.new_empty((b, c, 3), dtype=torch.float64)

    @torch.library.register_fake("relkd::cwd_loss_backward")
    def _(grad, ys, yt, stats, temperature, output_mask):
        fake_one_device(OP + "_backward", grad, ys, yt, stats)
        gs = ys.new_empty(ys.shape) if output_mask[0] else None
        return gs, yt.new_empty(yt.shape) if output_mask[1] else None

    def setup_context(ctx, inputs, output):
        ys, yt, temperature, _ = inputs
        ctx.save_for_backward(ys, yt, output[1])
        ctx.temperature = temperature

    def backward(ctx, grad, _grad_stats):
        # Only the gradients autograd asks for: distillation detaches the teacher.
        mask = list(ctx.needs_input_grad[:2])
        if not any(mask):
            return None, None, None, None
        ys, yt, stats = ctx.saved_tensors
        gs, gt = torch.ops.relkd.cwd_loss_backward(grad, ys, yt, stats, ctx.temperature, mask)
        return gs, gt, None, None

    torch.library.register_autograd("relkd::cwd_loss", backward, setup_context=setup_context)
