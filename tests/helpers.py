"""Shared helpers of the op tests."""

from __future__ import annotations

import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Norm-wise relative error ‖actual − expected‖ / ‖expected‖, in float64."""
    a, e = actual.detach().double(), expected.detach().double()
    return float((a - e).norm() / e.norm().clamp_min(1e-300))


def grads(loss_fn, *inputs: torch.Tensor, **kwargs) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Loss and gradients w.r.t. fresh leaf copies of the floating-point tensors in ``inputs``."""
    args = [
        x.detach().clone().requires_grad_(True)
        if isinstance(x, torch.Tensor) and x.is_floating_point()
        else x
        for x in inputs
    ]
    leaves = [x for x in args if isinstance(x, torch.Tensor) and x.requires_grad]
    loss = loss_fn(*args, **kwargs)
    return loss.detach(), torch.autograd.grad(loss, leaves)


def assert_matches(native_fn, reference_fn, *inputs: torch.Tensor, rtol: float = 1e-9, **kwargs) -> None:
    """Loss and gradients of the native op match the reference (float64 inputs: to ~rtol)."""
    loss, g = grads(native_fn, *inputs, **kwargs)
    ref_loss, ref_g = grads(reference_fn, *inputs, **kwargs)
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=1e-12)
    for a, e in zip(g, ref_g):
        assert rel_err(a, e) < 10 * rtol or float((a - e).norm()) < 1e-12, (rel_err(a, e), float(e.norm()))


def near_pair(shape_s, shape_t, delta: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 student features and a teacher perturbed by delta·noise (same shape)."""
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(shape_s, generator=g, dtype=torch.float64)
    return fs, fs + delta * torch.randn(shape_t, generator=g, dtype=torch.float64)


def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values as contiguous, channels_last and a non-contiguous (sliced) view."""
    wide = torch.cat([x, torch.zeros_like(x)], dim=3)[..., : x.shape[3]]
    padded = torch.zeros(x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3], dtype=x.dtype)
    padded[..., ::2] = x
    return {
        "contiguous": x.contiguous(),
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "sliced": wide,
        "strided": padded[..., ::2],
    }
