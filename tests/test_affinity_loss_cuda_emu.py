"""The CUDA normalization kernels of affinity_loss run on the CPU emulation of tests/cuda_emu/simt.h,
against autograd of x / max(|x|, eps): forward (unit vectors, or their sum and difference) and the chain
rule for the sides asked for (both, student only as in distillation, teacher only), with the host code's
launch geometry (see tests/test_relation_kl_loss_cuda_emu.py for what the emulation does and does not
check)."""

import pytest
import torch
from emulator import build, load, run, save

EPS = 1e-8


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return build("affinity_emu.cpp", "address", tmp_path_factory.mktemp("emu_build"))


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(EPS)


@pytest.mark.parametrize(
    ("dtype", "work"),
    [(torch.float64, torch.float64), (torch.float32, torch.float32), (torch.float32, torch.float64)],
    ids=["f64", "f32", "f32-work64"],
)
@pytest.mark.parametrize(
    ("B", "Cs", "Ct", "N"), [(1, 1, 1, 1), (2, 8, 8, 300), (3, 16, 40, 257), (1, 64, 64, 513)]
)
@pytest.mark.parametrize("mask", ["11", "10", "01"], ids=["both", "student", "teacher"])
def test_kernels_match_autograd(harness, tmp_path, dtype, work, B, Cs, Ct, N, mask):
    g = torch.Generator().manual_seed(N)
    xs = torch.randn(B, Cs, N, generator=g, dtype=torch.float64).to(dtype)
    xt = torch.randn(B, Ct, N, generator=g, dtype=torch.float64).to(dtype)
    xs[..., 0] = 0  # a zero pixel vector: x / eps and g / eps
    sum_diff = Cs == Ct
    ga = torch.randn(B, Cs, N, generator=g, dtype=torch.float64).to(work)
    gb = torch.randn(B, Ct, N, generator=g, dtype=torch.float64).to(work)
    for name, t in (("xs", xs), ("xt", xt), ("ga", ga), ("gb", gb)):
        save(tmp_path, name, t)
    names = {torch.float32: "float", torch.float64: "double"}
    sizes = map(str, (B, Cs, Ct, N))
    run(harness, [names[dtype], names[work], *sizes, repr(EPS), str(int(sum_diff)), mask, str(tmp_path)])

    s, t = xs.double().requires_grad_(), xt.double().requires_grad_()
    us, ut = unit(s), unit(t)
    if sum_diff:  # a = ûs + ût, o = ûs − ût; ∂/∂ûs = ga + gb, ∂/∂ût = ga − gb
        a_ref, o_ref = us + ut, us - ut
    else:
        a_ref, o_ref = us, ut
    gxs_ref, gxt_ref = torch.autograd.grad((a_ref * ga.double()).sum() + (o_ref * gb.double()).sum(), (s, t))
    a, o = load(tmp_path, "a", work, (B, Cs, N)), load(tmp_path, "o", work, (B, Ct, N))
    checks = [("a", a, a_ref.detach()), ("o", o, o_ref.detach())]
    for name, wanted, x, ref in (("gxs", mask[0] == "1", xs, gxs_ref), ("gxt", mask[1] == "1", xt, gxt_ref)):
        # a side not asked for had null pointers (touching them would have crashed) and is not written
        assert (tmp_path / f"{name}.bin").exists() == wanted
        if wanted:
            checks.append((name, load(tmp_path, name, dtype, x.shape), ref))
    tol = 1e-13 if dtype == work == torch.float64 else 1e-6
    for name, got, want in checks:
        # relative to max(|want|, 1): with one channel the chain rule gives 0 up to rounding
        err = float((got.double() - want).norm()) / max(float(want.norm()), 1.0)
        assert err < tol, (name, err)
