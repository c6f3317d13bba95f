"""gram_loss: Kernel Matrix Module (KMM), DESIGN §3.1.

Per sample, X = f[b] as C×N (N = H·W) and G = X Xᵀ / N; ``loss = 1/(B·C²) Σ_b ‖G_s − G_t‖²_F``.
Student and teacher share C; their spatial sizes may differ.
"""

from __future__ import annotations

import torch

from ._backend import use_native
from ._checks import check_tensor, dim_size, fake_one_device, raise_if_not_finite

OP = "gram_loss"


def gram_loss_reference(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """The definition, in plain PyTorch. fs: [B, C, Hs, Ws], ft: [B, C, Ht, Wt] → scalar."""
    b, c = fs.shape[:2]
    xs, xt = fs.flatten(2), ft.flatten(2)
    gs = xs @ xs.transpose(1, 2) / xs.shape[2]
    gt = xt @ xt.transpose(1, 2) / xt.shape[2]
    return ((gs - gt) ** 2).sum() / (b * c * c)


def gram_loss(fs: torch.Tensor, ft: torch.Tensor, *, check_finite: bool = True) -> torch.Tensor:
    """Gram ("style") matching loss between student and teacher features.

    Args:
        fs: student features [B, C, Hs, Ws].
        ft: teacher features [B, C, Ht, Wt] (same B and C; a 1×1 adapter belongs in front when the
            channel counts differ).
        check_finite: raise ValueError when an input holds NaN/Inf (one reduction of the result).

    Returns:
        Scalar loss ≥ 0, differentiable w.r.t. both inputs.

    Raises:
        TypeError: a non-tensor input, or tensors of a wrong dtype.
        ValueError: wrong shapes or devices (the op's own checks, csrc/common/checks.cpp).
    """
    check_tensor(OP, "fs", fs)
    check_tensor(OP, "ft", ft)
    if use_native(OP, fs, ft):
        return torch.ops.relkd.gram_loss(fs, ft, check_finite)[0]
    loss = gram_loss_reference(fs, ft)
    if check_finite:
        raise_if_not_finite(OP, loss, fs=fs, ft=ft)
    return loss


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _register() -> None:
    @torch.library.register_fake("relkd::gram_loss")
    def _(fs, ft, check_finite):
        fake_one_device(OP, fs, ft)
        b, c = dim_size(fs, 0), dim_size(fs, 1)
        return fs.new_empty(()), fs.new_empty((b, c, c), dtype=_acc_dtype(fs))

    @torch.library.register_fake("relkd::gram_loss_backward")
    def _(grad, fs, ft, diff, output_mask):
        fake_one_device(OP + "_backward", grad, fs, ft, diff)
        gs = fs.new_empty(fs.shape) if output_mask[0] else None
        return gs, ft.new_empty(ft.shape) if output_mask[1] else None

    def setup_context(ctx, inputs, output):
        fs, ft, _ = inputs
        ctx.save_for_backward(fs, ft, output[1])

    def backward(ctx, grad, _grad_diff):
        # Only the gradients autograd asks for (each is one GEMM); distillation detaches the teacher.
        mask = list(ctx.needs_input_grad[:2])
        if not any(mask):
            return None, None, None
        fs, ft, diff = ctx.saved_tensors
        gs, gt = torch.ops.relkd.gram_loss_backward(grad, fs, ft, diff, mask)
        return gs, gt, None

    torch.library.register_autograd("relkd::gram_loss", backward, setup_context=setup_context)
