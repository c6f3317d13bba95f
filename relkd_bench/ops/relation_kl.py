"""relation_kl_loss: softmax pixel-relation distillation (AAM variant, CIRKD-style), DESIGN §3.4.

Per sample, x̂_i = x_i / max(‖x_i‖, eps) for each pixel's channel vector and, for each pixel i, a
distribution over all pixels j: ``P(i, j) = softmax_j(⟨x̂_i, x̂_j⟩ / τ)``.
``loss = τ² / (B·N) Σ_b Σ_i KL(P_t(i,·) ‖ P_s(i,·))``. The native kernel sweeps the N×N pairs in tiles
and keeps only per-row statistics (O(B·N) memory; the eager reference holds several [B, N, N] tensors).

``pool > 1`` first average-pools both feature maps with kernel = stride = pool and ``ceil_mode=True``
(as CIRKD's patch pooling): a partial window at the bottom/right edge averages the pixels it covers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._backend import use_native
from ._checks import check_features, raise_if_not_finite

OP = "relation_kl_loss"


def _pool(f: torch.Tensor, pool: int) -> torch.Tensor:
    return f if pool == 1 else F.avg_pool2d(f, pool, stride=pool, ceil_mode=True)


def relation_kl_loss_reference(
    fs: torch.Tensor, ft: torch.Tensor, temperature: float = 1.0, pool: int = 1, eps: float = 1e-12
) -> torch.Tensor:
    """The definition, materializing the [B, N, N] relations. fs: [B, Cs, H, W], ft: [B, Ct, H, W]."""
    xs = F.normalize(_pool(fs, pool).flatten(2), dim=1, eps=eps)
    xt = F.normalize(_pool(ft, pool).flatten(2), dim=1, eps=eps)
    log_ps = F.log_softmax(xs.transpose(1, 2) @ xs / temperature, dim=-1)  # [B, N, N]
    log_pt = F.log_softmax(xt.transpose(1, 2) @ xt / temperature, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)  # [B, N]
    return temperature**2 * kl.mean()


def _check_args(fs: torch.Tensor, ft: torch.Tensor, temperature: float, pool: int, eps: float) -> None:
    check_features(OP, fs, ft, ("fs", "ft"))
    if fs.shape[2:] != ft.shape[2:]:
        raise ValueError(
            f"{OP}: spatial sizes differ (fs is {fs.shape[2]}x{fs.shape[3]}, "
            f"ft is {ft.shape[2]}x{ft.shape[3]}); resize one of them first"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"{OP}: temperature must be a number, got {type(temperature).__name__}")
    if not 0 < temperature < float("inf"):
        raise ValueError(f"{OP}: temperature must be positive and finite, got {temperature}")
    if isinstance(pool, bool) or not isinstance(pool, int):
        raise TypeError(f"{OP}: pool must be an int, got {type(pool).__name__}")
    if pool < 1:
        raise ValueError(f"{OP}: pool must be >= 1, got {pool}")
    if not eps > 0:
        raise ValueError(f"{OP}: eps must be positive, got {eps}")


def relation_kl_loss(
    fs: torch.Tensor,
    ft: torch.Tensor,
    temperature: float = 1.0,
    pool: int = 1,
    eps: float = 1e-12,
    *,
    check_finite: bool = True,
) -> torch.Tensor:
    """KL between teacher and student softmax pixel-relation distributions, over all pixel pairs.

    Args:
        fs: student features [B, Cs, H, W].
        ft: teacher features [B, Ct, H, W] (same B, H, W; Cs may differ from Ct).
        temperature: softmax temperature τ > 0 of the relations; the loss carries the usual τ² factor.
        pool: average-pool both maps by this factor first (kernel = stride = pool, ceil_mode): the
            pooled CIRKD/SKD baseline, for ablations. 1 = full resolution.
        eps: lower bound of a pixel vector's norm in the normalization (as in F.normalize).
        check_finite: raise ValueError when an input holds NaN/Inf (one reduction of the result).

    Returns:
        Scalar loss, differentiable w.r.t. fs and ft.
    """
    _check_args(fs, ft, temperature, pool, eps)
    if use_native(OP, fs, ft):
        out = torch.ops.relkd.relation_kl_loss(
            _pool(fs, pool), _pool(ft, pool), float(temperature), float(eps), check_finite
        )
        return out[0]
    loss = relation_kl_loss_reference(fs, ft, temperature, pool, eps)
    if check_finite:
        raise_if_not_finite(OP, loss, fs=fs, ft=ft)
    return loss


def _register() -> None:
    @torch.library.register_fake("relkd::relation_kl_loss")
    def _(fs, ft, temperature, eps, check_finite):
        n = fs.shape[2] * fs.shape[3]
        return fs.new_empty(()), fs.new_empty((fs.shape[0], 3, n), dtype=torch.float64)

    @torch.library.register_fake("relkd::relation_kl_loss_backward")
    def _(grad, fs, ft, stats, temperature, eps):
        return fs.new_empty(fs.shape), ft.new_empty(ft.shape)

    def setup_context(ctx, inputs, output):
        fs, ft, temperature, eps, _ = inputs
        ctx.save_for_backward(fs, ft, output[1])
        ctx.args = (temperature, eps)

    def backward(ctx, grad, _unused):
        fs, ft, stats = ctx.saved_tensors
        gs, gt = torch.ops.relkd.relation_kl_loss_backward(grad, fs, ft, stats, *ctx.args)
        return gs, gt, None, None, None

    torch.library.register_autograd("relkd::relation_kl_loss", backward, setup_context=setup_context)
