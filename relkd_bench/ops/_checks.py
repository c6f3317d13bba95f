"""Input checks shared by the ops (metadata only, so they cost nothing and trace under torch.compile)."""

from __future__ import annotations

import torch


def check_features(op: str, a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]) -> None:
    """Both 4-D [B, C, H, W], floating point, one dtype, one device, one batch size."""
    for name, t in zip(names, (a, b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{op}: {name} must be 4-D [B, C, H, W], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{op}: {name} is empty (shape {tuple(t.shape)})")
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op}: {names[0]} and {names[1]} must have the same dtype, got {a.dtype} and {b.dtype}"
        )
    if a.device != b.device:
        raise ValueError(
            f"{op}: {names[0]} and {names[1]} must be on the same device, got {a.device} and {b.device}"
        )
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{op}: batch sizes differ ({names[0]} has {a.shape[0]}, {names[1]} has {b.shape[0]})"
        )


def raise_if_not_finite(op: str, loss: torch.Tensor, **inputs: torch.Tensor) -> None:
    """The reference backend's finite check: one reduction, inputs scanned only on failure."""
    if bool(torch.isfinite(loss)):
        return
    for name, t in inputs.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(
                f"{op}: {name} contains NaN or Inf values (pass check_finite=False to skip this check)"
            )
    raise ValueError(f"{op}: the inputs are finite but the loss overflowed in {loss.dtype}")
