"""The CUDA kernels of kd_logits_loss run on the CPU emulation of tests/cuda_emu/simt.h, against the
float64 reference: per-pixel KL and the gradients asked for (both, student only as in distillation, teacher
only), with the host code's launch geometry (see tests/test_relation_kl_loss_cuda_emu.py for what the
emulation does and does not check)."""

import pytest
import torch
from emulator import build, load, run, save
from helpers import rel_err

from relkd_bench.ops import kd_logits_loss_reference


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return build("kd_logits_emu.cpp", "address", tmp_path_factory.mktemp("emu_build"))


@pytest.mark.parametrize("mask", ["11", "10", "01"], ids=["both", "student", "teacher"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(
    ("B", "K", "H", "W", "T"),
    [(1, 2, 1, 1, 1.0), (2, 3, 17, 17, 4.0), (3, 21, 5, 13, 0.5), (1, 8, 16, 32, 1.0)],
)
def test_kernels_match_reference(harness, tmp_path, dtype, B, K, H, W, T, mask):
    g = torch.Generator().manual_seed(K)
    zs = (3 * torch.randn(B, K, H, W, generator=g, dtype=torch.float64)).to(dtype)
    zt = (3 * torch.randn(B, K, H, W, generator=g, dtype=torch.float64)).to(dtype)
    upstream = 0.7
    save(tmp_path, "zs", zs)
    save(tmp_path, "zt", zt)
    save(tmp_path, "grad", torch.tensor([upstream], dtype=torch.float64))
    N = H * W
    name = "double" if dtype == torch.float64 else "float"
    run(harness, [name, str(B), str(K), str(N), repr(T), mask, str(tmp_path)])

    s, t = zs.double().requires_grad_(), zt.double().requires_grad_()
    ls, lt = torch.log_softmax(s / T, 1), torch.log_softmax(t / T, 1)
    kl_ref = (lt.exp() * (lt - ls)).sum(1).flatten()
    gs_ref, gt_ref = torch.autograd.grad(upstream * kd_logits_loss_reference(s, t, temperature=T), (s, t))
    kl = load(tmp_path, "kl", torch.float64, (B * N,))
    assert rel_err(kl, kl_ref) < 1e-12
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for name, wanted, ref in (("gs", mask[0] == "1", gs_ref), ("gt", mask[1] == "1", gt_ref)):
        # a gradient not asked for had a null pointer (a write would have crashed) and is not written
        assert (tmp_path / f"{name}.bin").exists() == wanted
        if wanted:
            assert rel_err(load(tmp_path, name, dtype, zs.shape), ref) < tol
