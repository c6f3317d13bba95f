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
from ._checks import as_float, as_int, check_tensor, dim_size, fake_one_device, raise_if_not_finite

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


def _check_pool(fs: torch.Tensor, pool: object) -> int:
    """pool is a Python-side argument (the pooling runs before the op): an int in [1, max(H, W)]."""
    pool = as_int(OP, "pool", pool)
    limit = max(fs.shape[2:]) if fs.dim() == 4 else None
    if pool < 1 or (limit is not None and pool > limit):
        bound = f"max(H, W) = {limit}" if limit is not None else "max(H, W)"
        raise ValueError(f"{OP}: pool must be in [1, {bound}], got {pool}")
    return pool


def _poolable(fs: torch.Tensor, ft: torch.Tensor) -> bool:
    """Whether pooling can run ahead of the op. Inputs it cannot pool, or whose spatial sizes differ, go to
    the op unpooled, so that its checks report them as given."""
    return all(t.dim() == 4 and t.is_floating_point() and t.numel() > 0 for t in (fs, ft)) and (
        fs.shape[2:] == ft.shape[2:]
    )


def _grads_to_form(fs: torch.Tensor, ft: torch.Tensor) -> list[bool]:
    """The inputs whose gradient the op forms in its forward: those that require one (Liger-Kernel's pattern).
    Forming them there reuses the forward's rows and, where a sample's pairs fit one sweep (the CPU:
    N ≤ 1024), its tiles, which the backward would otherwise recompute. A gradient formed but never used (a
    loss left out of the backward) is wasted work; under torch.no_grad nothing is formed."""
    enabled = torch.is_grad_enabled()
    return [enabled and fs.requires_grad, enabled and ft.requires_grad]


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
        ft: teacher features [B, Ct, H, W] (same B, H, W, dtype and device; Cs may differ from Ct).
        temperature: softmax temperature τ of the relations, in [1e-3, 1e3] (outside it the float64 row
            sums lose the loss: their rounding grows like eps·τ², 1.5e-4 off at τ = 1e6); the loss
            carries the usual τ² factor.
        pool: average-pool both maps by this factor first (kernel = stride = pool, ceil_mode), an int in
            [1, max(H, W)]: the pooled CIRKD/SKD baseline, for ablations. 1 = full resolution.
        eps: lower bound (> 0) of a pixel vector's norm in the normalization (as in F.normalize).
        check_finite: raise ValueError when an input holds NaN/Inf (one reduction of the result).

    Returns:
        Scalar loss ≥ 0 (a KL divergence; a rounding below 0 is clamped), differentiable w.r.t. fs and ft.

    Raises:
        TypeError: an argument of the wrong Python type, or tensors of a wrong dtype.
        ValueError: wrong shapes, devices or values (the op's own checks, csrc/common/checks.cpp).
    """
    check_tensor(OP, "fs", fs)
    check_tensor(OP, "ft", ft)
    temperature = as_float(OP, "temperature", temperature)
    pool = _check_pool(fs, pool)
    eps = as_float(OP, "eps", eps)
    if use_native(OP, fs, ft):
        if pool > 1 and _poolable(fs, ft):
            fs, ft = _pool(fs, pool), _pool(ft, pool)
        grad_mask = _grads_to_form(fs, ft)
        return torch.ops.relkd.relation_kl_loss(fs, ft, temperature, eps, check_finite, grad_mask)[0]
    loss = relation_kl_loss_reference(fs, ft, temperature, pool, eps)
    if check_finite:
        raise_if_not_finite(OP, loss, fs=fs, ft=ft)
    return loss


def _register() -> None:
    @torch.library.register_fake("relkd::relation_kl_loss")
    def _(fs, ft, temperature, eps, check_finite, grad_mask=(False, False)):
        fake_one_device(OP, fs, ft)
        n = dim_size(fs, 2) * dim_size(fs, 3)
        gs = fs.new_empty(fs.shape) if grad_mask[0] else fs.new_empty((0,))
        gt = ft.new_empty(ft.shape) if grad_mask[1] else ft.new_empty((0,))
        return fs.new_empty(()), fs.new_empty((dim_size(fs, 0), 3, n), dtype=torch.float64), gs, gt

    @torch.library.register_fake("relkd::relation_kl_loss_backward")
    def _(grad, fs, ft, stats, temperature, eps, output_mask):
        fake_one_device(OP + "_backward", grad, fs, ft, stats)
        gs = fs.new_empty(fs.shape) if output_mask[0] else None
        gt = ft.new_empty(ft.shape) if output_mask[1] else None
        return gs, gt

    def setup_context(ctx, inputs, output):
        fs, ft, temperature, eps, _, grad_mask = inputs  # torch passes the schema's defaults too
        _, stats, gs, gt = output
        ctx.mark_non_differentiable(stats, gs, gt)
        ctx.save_for_backward(fs, ft, stats, gs, gt)
        ctx.formed = tuple(grad_mask)
        ctx.args = (temperature, eps)

    def backward(ctx, grad, *_unused):
        # Only the gradients autograd asks for: a side the forward formed is scaled by the upstream gradient;
        # one it did not form comes from the backward op, which does no work for a side not asked for (a
        # detached teacher, in every distillation use).
        # Under create_graph the backward op serves every side, as for the other ops: the saved gradients are
        # constants, and scaling them would silently drop the second-order terms, where the backward op (which
        # has no autograd formula) makes torch warn and refuse to differentiate through it.
        fs, ft, stats, gs, gt = ctx.saved_tensors
        formed = (False, False) if torch.is_grad_enabled() else ctx.formed
        needed = ctx.needs_input_grad[:2]
        missing = [n and not f for n, f in zip(needed, formed)]
        late = (None, None)
        if any(missing):
            late = torch.ops.relkd.relation_kl_loss_backward(grad, fs, ft, stats, *ctx.args, missing)
        sides = zip(needed, formed, (gs, gt), late)
        grads = [(g * grad if f else g_late) if n else None for n, f, g, g_late in sides]
        return grads[0], grads[1], None, None, None, None

    torch.library.register_autograd("relkd::relation_kl_loss", backward, setup_context=setup_context)
