"""The CUDA kernels of relation_kl_loss (fused sweep and panel sweep) run on the CPU emulation of
tests/cuda_emu/simt.h, against the dense float64 formulas of their contract (RelationRows, csrc/relkd.h).

This checks what can go wrong on the CPU as on the GPU: indexing, tile edges, stage and chunk loops, the
launch geometry, barrier placement (sanitized runs: out-of-bounds accesses and shared-memory races). It does
not check what only the hardware decides: speed, warp scheduling, the CUDA math library.
"""

import pytest
import torch
from emulator import build, load, run, save
from helpers import rel_err


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("emu_build")
    return {s: build("relation_kl_emu.cpp", s, out) for s in ("address", "thread")}


def unit_rows(f: torch.Tensor, eps: float, inv_tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂ [B, N, C] and the row offsets m_i = |x̂_i| max_j |x̂_j| / τ [B, N] (float64)."""
    x = f.flatten(2).double()
    norm = x.norm(dim=1, keepdim=True)
    denom = norm.clamp_min(eps)
    n = (norm / denom).squeeze(1)
    return (x / denom).transpose(1, 2), n * n.amax(1, keepdim=True) * inv_tau


def relation_rows(fs, ft, tau, work, eps=1e-8):
    """The RelationRows of csrc/common/relation_kl.cpp for a CUDA kernel set (work dtype throughout)."""
    inv_tau = 1.0 / tau
    us, ms = unit_rows(fs, eps, inv_tau)
    ut, mt = unit_rows(ft, eps, inv_tau)
    rows = {"xs": us.to(work), "xt": ut.to(work), "offsets": torch.stack([ms, mt], 1)}
    if fs.shape[1] == ft.shape[1]:
        e = ut - us
        rows["dl"] = torch.cat([ut, e], 2).to(work)
        rows["dr"] = torch.cat([e, us], 2).to(work)
    return rows


def expected(rows, inv_tau):
    """Row sums [B, 3, N], terms [B, 5, N] and the row gradients Σ_j G_ij x̂_j, dense in float64."""
    xs, xt = rows["xs"].double(), rows["xt"].double()
    s = xs @ xs.transpose(1, 2) * inv_tau
    if "dl" in rows:
        d = rows["dl"].double() @ rows["dr"].double().transpose(1, 2) * inv_tau
    else:
        d = xt @ xt.transpose(1, 2) * inv_tau - s
    ms, mt = rows["offsets"][:, 0, :, None], rows["offsets"][:, 1, :, None]
    es, et = (s - ms).exp(), (s + d - mt).exp()
    sums = torch.stack([es.sum(2), et.sum(2), (et * d).sum(2)], 1)
    lse_s, lse_t = ms[..., 0] + sums[:, 0].log(), mt[..., 0] + sums[:, 1].log()
    kl = sums[:, 2] / sums[:, 1] + lse_s - lse_t
    terms = torch.stack(
        [ms[..., 0], mt[..., 0], (ms[..., 0] - lse_s).exp(), (mt[..., 0] - lse_t).exp(), lse_t - lse_s + kl],
        1,
    )
    ps, pt = es * terms[:, 2, :, None], et * terms[:, 3, :, None]
    w_s = ps - pt
    w_t = pt * (d - terms[:, 4, :, None])
    gs = (w_s + w_s.transpose(1, 2)) @ xs
    gt = (w_t + w_t.transpose(1, 2)) @ xt
    return sums, terms, gs, gt


def emulate(harness, tmp_path, path, fs, ft, tau, work, panel_width=0, sanitizer="address", mask="both"):
    """(sums, gs, gt) from the kernels and from the dense formulas; with mask "student" or "teacher" (the
    backward's output_mask) the kernels' other gradient is None: the harness writes no file for it."""
    rows = relation_rows(fs, ft, tau, work)
    sums_ref, terms, gs_ref, gt_ref = expected(rows, 1.0 / tau)
    for name, t in rows.items():
        save(tmp_path, name, t)
    save(tmp_path, "terms", terms)
    B, N, Cs = rows["xs"].shape
    Ct = rows["xt"].shape[2]
    K2 = rows["dl"].shape[2] if "dl" in rows else 0
    dtype = {torch.float32: "float", torch.float64: "double"}[work]
    run(
        harness[sanitizer],
        [path, dtype, *map(str, (B, N, Cs, Ct, K2)), repr(1.0 / tau), str(panel_width or N), mask]
        + [str(tmp_path)],
    )
    sums = load(tmp_path, "sums", torch.float64, (B, 3, N))
    gs = load(tmp_path, "gs", work, (B, N, Cs)) if (tmp_path / "gs.bin").exists() else None
    gt = load(tmp_path, "gt", work, (B, N, Ct)) if (tmp_path / "gt.bin").exists() else None
    return (sums, gs, gt), (sums_ref, gs_ref, gt_ref)


def features(B, C, H, W, seed):
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


SHAPES = [  # B, Cs, Ct, H, W: N across the 64-row tiles, C across the 16/8-deep stages and 32/16-wide chunks
    (1, 1, 1, 1, 1),
    (2, 8, 8, 5, 13),
    (1, 64, 64, 8, 8),
    (1, 40, 40, 5, 13),
    (2, 8, 40, 9, 15),
    (1, 64, 17, 17, 17),
    (3, 33, 1, 4, 5),
]


@pytest.mark.parametrize("work", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("path", ["fused", "panels"])
def test_kernels_match_dense_formulas(harness, tmp_path, path, shape, work):
    B, Cs, Ct, H, W = shape
    fs, ft = features(B, Cs, H, W, 1), features(B, Ct, H, W, 2)
    tau = 0.5
    # several panels, a ragged last one, j0 > 0 in the weights' symmetric term
    width = (7 if H * W <= 64 else 128) if path == "panels" else 0
    got, want = emulate(harness, tmp_path, path, fs, ft, tau, work, panel_width=width)
    tol = 1e-11 if work == torch.float64 else 2e-5
    for name, a, e in zip(("sums", "gs", "gt"), got, want):
        assert rel_err(a, e) < tol, (name, rel_err(a, e))


@pytest.mark.parametrize("path", ["fused", "panels"])
def test_near_teacher_and_low_temperature(harness, tmp_path, path):
    """Student within 1e-4 of the teacher at τ = 0.1 (the d = dl·drᵀ form keeps d's digits), float32 work."""
    fs = features(2, 16, 9, 9, 3)
    ft = fs + 1e-4 * features(2, 16, 9, 9, 4)
    got, want = emulate(harness, tmp_path, path, fs, ft, 0.1, torch.float32, panel_width=32)
    for name, a, e in zip(("sums", "gs", "gt"), got, want):
        assert rel_err(a, e) < 1e-4, (name, rel_err(a, e))


@pytest.mark.parametrize("path", ["fused", "panels"])
def test_no_races_between_barriers(harness, tmp_path, path):
    """ThreadSanitizer over a shape with several tiles, stages and chunks: no shared-memory race."""
    fs, ft = features(1, 40, 9, 9, 5), features(1, 24, 9, 9, 6)
    got, want = emulate(
        harness, tmp_path, path, fs, ft, 1.0, torch.float32, panel_width=40, sanitizer="thread"
    )
    for a, e in zip(got, want):
        assert rel_err(a, e) < 2e-5


@pytest.mark.parametrize("mask", ["student", "teacher"])
@pytest.mark.parametrize("shape", [(2, 40, 40, 9, 9), (1, 8, 40, 9, 15)], ids=["same_c", "channels_differ"])
@pytest.mark.parametrize("path", ["fused", "panels"])
def test_only_the_gradient_asked_for(harness, tmp_path, path, shape, mask):
    """The backward's output_mask: the wanted gradient matches, the other side is never touched (the fused
    kernel gets a null output for it, so a write would be an AddressSanitizer report; the panel weights kernel
    must leave its panel unchanged, which the harness checks) and none is written."""
    B, Cs, Ct, H, W = shape
    fs, ft = features(B, Cs, H, W, 7), features(B, Ct, H, W, 8)
    width = 40 if path == "panels" else 0
    (sums, gs, gt), (sums_ref, gs_ref, gt_ref) = emulate(
        harness, tmp_path, path, fs, ft, 0.5, torch.float32, panel_width=width, mask=mask
    )
    assert rel_err(sums, sums_ref) < 2e-5
    got, want, other = (gs, gs_ref, gt) if mask == "student" else (gt, gt_ref, gs)
    assert other is None
    assert rel_err(got, want) < 2e-5


@pytest.mark.parametrize("mask", ["student", "teacher"])
@pytest.mark.parametrize("path", ["fused", "panels"])
def test_one_gradient_has_no_races(harness, tmp_path, path, mask):
    """ThreadSanitizer over a grid of one side's chunks only."""
    fs, ft = features(1, 40, 9, 9, 9), features(1, 24, 9, 9, 10)
    (_, gs, gt), (_, gs_ref, gt_ref) = emulate(
        harness, tmp_path, path, fs, ft, 1.0, torch.float32, panel_width=40, sanitizer="thread", mask=mask
    )
    got, want = (gs, gs_ref) if mask == "student" else (gt, gt_ref)
    assert rel_err(got, want) < 2e-5
