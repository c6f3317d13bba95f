"""The Python side of the ops' argument checks: only what the registered ops cannot see.

Every rule on values (shapes, dtypes, devices, saved statistics, the ranges of temperature, eps, weights and
num_classes) has its one home in csrc/common/checks.cpp and runs inside every registered op, forward and
backward, so ``relkd_bench.ops.*`` and ``torch.ops.relkd.*`` raise the same errors. What stays here:

* Python types. The op schema rejects a ``None`` or a string with a generic RuntimeError and silently takes
  ``True`` as 1.0; the public functions raise a TypeError naming the argument instead (bools are refused
  wherever a number is expected).
* ints the schema cannot carry (outside int64), and ``pool``, which never reaches an op.

The reference backend (the pure-PyTorch definitions, used when the extension is not built) gets the same
type checks; it leaves the values to PyTorch.
"""

from __future__ import annotations

import numbers

import torch

_INT64 = (-(2**63), 2**63 - 1)


_REALS = (numbers.Real, torch.SymInt, torch.SymFloat)
_INTS = (numbers.Integral, torch.SymInt)


def _is_number(value: object, kinds: tuple[type, ...]) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool)


def check_tensor(op: str, name: str, value: object) -> None:
    """TypeError naming ``name`` unless value is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def as_float(op: str, name: str, value: object) -> float:
    """value as a Python float; a TypeError naming ``name`` for non-numbers (None, str, bool, tensors)."""
    if not _is_number(value, _REALS):
        raise TypeError(f"{op}: {name} must be a real number, got {type(value).__name__}")
    if isinstance(value, torch.SymFloat):
        return value
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{op}: {name} is too large for a float, got {value}") from None


def as_int(op: str, name: str, value: object) -> int:
    """value as an int64-sized int; a TypeError naming ``name`` for non-integers (floats, bools, None)."""
    if not _is_number(value, _INTS):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    if isinstance(value, torch.SymInt):
        return value
    value = int(value)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError(f"{op}: {name} must fit in int64, got {value}")
    return value


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


def dim_size(t: torch.Tensor, dim: int) -> int:
    """t.shape[dim], or 1 when t has no such dim: the fake registrations describe the outputs of any input
    without judging it (the op itself rejects a malformed one when it runs, also under torch.compile)."""
    return t.shape[dim] if dim < t.dim() else 1


def fake_one_device(op: str, *args: object) -> None:
    """The fake registrations also serve the Meta dispatch key, which a call mixing meta tensors with real
    ones reaches instead of a kernel: such a call is refused here, as the kernels refuse mixed devices."""
    devices = sorted({str(a.device) for a in args if isinstance(a, torch.Tensor)})
    if len(devices) > 1:
        raise ValueError(f"{op}: all tensor arguments must be on the same device, got {', '.join(devices)}")
