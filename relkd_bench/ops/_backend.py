"""Choice between the native kernels (relkd_bench._C) and the pure-PyTorch references.

Native when the extension imports; otherwise the reference, with a one-time warning.
``RELKD_BACKEND=native|reference`` (read once) or :func:`set_backend` forces one.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

import torch

BACKENDS = ("native", "reference")

_native: ModuleType | None = None
_native_error: str | None = None
_choice: str | None = None

try:
    _native = importlib.import_module("relkd_bench._C")
except ImportError as exc:  # a source checkout without a build
    _native_error = f"{type(exc).__name__}: {exc}"


def native_available() -> bool:
    """Whether the compiled extension imported."""
    return _native is not None


def native_has_cuda() -> bool:
    """Whether the compiled extension carries CUDA kernels."""
    return _native is not None and bool(_native.with_cuda)


def cpu_kernels() -> str | None:
    """The build of the native CPU kernels the ops run (csrc/cpu/isa.h): ``RELKD_CPU_ISA`` when it names one,
    else the widest this CPU has (``avx512``, ``avx2`` or ``baseline``); ``None`` without the extension."""
    if _native is None:
        return None
    forced = os.environ.get("RELKD_CPU_ISA", "")
    return forced if forced not in ("", "auto") else _native.cpu_kernels


def set_backend(name: str | None) -> None:
    """Force ``"native"`` or ``"reference"``; ``None`` returns to the automatic choice."""
    global _choice
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "native" and _native is None:
        raise RuntimeError(
            "relkd_bench: the native backend was requested but relkd_bench._C is not built "
            f"({_native_error}); run `pip install --no-build-isolation -e .`"
        )
    _choice = name


def backend() -> str:
    """The backend in use: ``"native"`` or ``"reference"``."""
    if _choice is None:
        requested = os.environ.get("RELKD_BACKEND", "").strip().lower() or None
        if requested is None and _native is None:
            warnings.warn(
                f"relkd_bench._C is not built ({_native_error}); using the slow pure-PyTorch reference ops",
                RuntimeWarning,
                stacklevel=3,
            )
            requested = "reference"
        set_backend(requested or "native")
    return _choice


def use_native(op: str, *tensors: torch.Tensor) -> bool:
    """True when ``op`` should run natively on these tensors; a clear error when it cannot."""
    if backend() != "native":
        return False
    if any(t.is_cuda for t in tensors) and not native_has_cuda():
        raise RuntimeError(
            f"{op}: got CUDA tensors but relkd_bench._C was built without CUDA kernels; rebuild with "
            "RELKD_CUDA=1 (or use the reference backend: RELKD_BACKEND=reference)"
        )
    return True
