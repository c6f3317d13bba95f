"""The CUDA kernels of cwd_loss run on the CPU emulation of tests/cuda_emu/simt.h, against the float64
reference: per-row statistics (lse_s, lse_t, KL) and the gradients asked for (both, student only as in
distillation, teacher only), with the host code's launch geometry. Rows longer than one chunk (4096 pixels)
exercise the chunk merge; the thread-sanitized build checks the block reduction's barriers (see
tests/test_relation_kl_loss_cuda_emu.py for what the emulation does and does not check)."""

import pytest
import torch
from emulator import build, load, run, save
from helpers import rel_err

from relkd_bench.ops import cwd_loss_reference

CHUNK = 4096  # cwd_kernels::kChunk


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("emu_build")
    return {s: build("cwd_emu.cpp", s, out) for s in ("address", "thread")}


SHAPES = [
    (1, 1, 1, 1, 1.0),
    (2, 3, 17, 17, 4.0),
    (3, 2, 5, 13, 0.5),
    (1, 2, 64, 64, 1.0),  # exactly one chunk
    (1, 2, 17, 241, 2.0),  # one chunk and one pixel
    (2, 1, 96, 100, 0.1),  # three chunks, the last partial
]


def _run(harness, sanitizer, tmp_path, dtype, B, C, H, W, T, mask, scale=3.0, one_hot_teacher=False):
    g = torch.Generator().manual_seed(B * 100 + C * 10 + H)
    ys = (scale * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)).to(dtype)
    yt = (scale * torch.randn(B, C, H, W, generator=g, dtype=torch.float64)).to(dtype)
    upstream = 0.7
    save(tmp_path, "ys", ys)
    save(tmp_path, "yt", yt)
    save(tmp_path, "grad", torch.tensor([upstream], dtype=torch.float64))
    name = "double" if dtype == torch.float64 else "float"
    run(harness[sanitizer], [name, str(B), str(C), str(H * W), repr(T), mask, str(tmp_path)])

    s, t = ys.double().requires_grad_(), yt.double().requires_grad_()
    ls, lt = torch.log_softmax(s.flatten(2) / T, 2), torch.log_softmax(t.flatten(2) / T, 2)
    kl = (lt.exp() * (lt - ls)).sum(2)
    stats_ref = torch.stack(
        [torch.logsumexp(s.flatten(2) / T, 2), torch.logsumexp(t.flatten(2) / T, 2), kl], 2
    ).reshape(B * C, 3)
    gs_ref, gt_ref = torch.autograd.grad(upstream * cwd_loss_reference(s, t, temperature=T), (s, t))
    stats = load(tmp_path, "stats", torch.float64, (B * C, 3))
    assert rel_err(stats[:, :2], stats_ref[:, :2].detach()) < 1e-13
    assert rel_err(stats[:, 2], kl.detach().flatten()) < 1e-11
    tol = 1e-11 if dtype == torch.float64 else 1e-6
    for gname, wanted, ref in (("gs", mask[0] == "1", gs_ref), ("gt", mask[1] == "1", gt_ref)):
        # a gradient not asked for had a null pointer (a write would have crashed) and is not written
        assert (tmp_path / f"{gname}.bin").exists() == wanted
        if not wanted:
            continue
        got = load(tmp_path, gname, dtype, ys.shape)
        if gname == "gt" and one_hot_teacher:
            # p_t is one-hot to float64: the exact teacher gradient is ~1e-40 and both the kernel and autograd
            # give rounding noise of (z_t − z_s)·eps·s (~1e-13·s here) instead; bound that noise.
            assert float((got.double() - ref).abs().max()) < 1e-10 * float(gs_ref.abs().max())
        else:
            assert rel_err(got, ref) < tol


@pytest.mark.parametrize("mask", ["11", "10", "01"], ids=["both", "student", "teacher"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("B", "C", "H", "W", "T"), SHAPES)
def test_kernels_match_reference(harness, tmp_path, dtype, B, C, H, W, T, mask):
    _run(harness, "address", tmp_path, dtype, B, C, H, W, T, mask)


@pytest.mark.parametrize(("B", "C", "H", "W", "T"), [SHAPES[1], SHAPES[5]])
def test_block_reduction_has_no_races(harness, tmp_path, B, C, H, W, T):
    _run(harness, "thread", tmp_path, torch.float64, B, C, H, W, T, "11")


def test_chunk_merge_with_the_maxima_in_different_chunks(harness, tmp_path):
    """Maps of ±160 at τ = 0.05: a row's maxima sit in different chunks, so the merge rescales by e^{−800}
    and beyond; nothing underflows into NaN and the statistics stay exact."""
    _run(harness, "address", tmp_path, torch.float64, 1, 2, 64, 100, 0.05, "11", scale=40.0,
         one_hot_teacher=True)
