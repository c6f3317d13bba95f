"""Builds and runs the CPU emulation harnesses of the CUDA kernels (tests/cuda_emu, see simt.h)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

EMU_DIR = Path(__file__).parent / "cuda_emu"

# address: out-of-bounds reads and writes, undefined behaviour; thread: races between the threads of a block
# (a missing __syncthreads). The two sanitizers cannot share a binary.
SANITIZERS = {"address": "-fsanitize=address,undefined", "thread": "-fsanitize=thread"}


def build(source: str, sanitizer: str, out_dir: Path) -> Path:
    """Compiles tests/cuda_emu/<source> with the given sanitizer; a missing compiler fails the test."""
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise RuntimeError(f"the CUDA emulation tests need a C++20 compiler; {cxx!r} is not on PATH")
    exe = out_dir / f"{Path(source).stem}_{sanitizer}"
    cmd = [
        cxx,
        "-std=c++20",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-unknown-pragmas",
        SANITIZERS[sanitizer],
        "-fno-sanitize-recover=all",
        "-pthread",
        str(EMU_DIR / source),
        "-o",
        str(exe),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building {source} failed:\n{done.stderr[-4000:]}")
    return exe


def run(exe: Path, args: list[str]) -> None:
    """Runs a harness; sanitizer reports and emulator errors (simt: ...) fail the test with their text."""
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=0")
    cmd = [str(exe), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if "unexpected memory mapping" in done.stderr and shutil.which("setarch"):
        # GCC 12's ThreadSanitizer cannot place its shadow memory under strong address randomization
        # (vm.mmap_rnd_bits > 28 on some kernels); the same run without randomization is equivalent.
        cmd = ["setarch", platform.machine(), "-R", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 or "WARNING: ThreadSanitizer" in done.stderr:
        raise AssertionError(
            f"{exe.name} {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr[-6000:]}"
        )


def save(directory: Path, name: str, t: torch.Tensor) -> None:
    t.detach().contiguous().numpy().tofile(directory / f"{name}.bin")


def load(directory: Path, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(np.fromfile(directory / f"{name}.bin", dtype=np_dtype)).reshape(shape)
