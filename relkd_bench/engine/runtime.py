"""Runtime set-up: device choice, threads, seeding and determinism."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np
import torch

from relkd_bench import ops
from relkd_bench.config import TrainConfig

__all__ = ["backend_name", "epoch_seed", "resolve_device", "seed_everything", "setup_runtime"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without a GPU raises ``RuntimeError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but torch sees no CUDA device (use device=auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    """Seed of one epoch: every epoch re-seeds from ``(seed, epoch)`` so a resumed run replays exactly."""
    return (seed * 1_000_003 + epoch * 7919 + salt) % 2**31


def setup_runtime(cfg: TrainConfig) -> torch.device:
    """Pick the device, set threads and determinism, seed everything; returns the device."""
    device = resolve_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cpu":  # CPU kernels are deterministic; the flag's warnings are about CUDA
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation")
    seed_everything(cfg.seed)
    return device


def backend_name(device: torch.device) -> str:
    """``"<native|reference>-<cpu|cuda>"``: which implementation of the ops ran where."""
    return f"{ops.backend()}-{device.type}"
