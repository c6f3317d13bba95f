import pytest
import torch
from helpers import (
    assert_bad_input,
    assert_cuda_matches_float64,
    assert_matches,
    grads,
    layouts,
    near_pair,
    non_finite_result,
    rel_err,
    softmax_kl_mp,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from relkd_bench import ops
from relkd_bench.bench import peak_extra_mb
from relkd_bench.ops import relation_kl_loss, relation_kl_loss_reference

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")


def features(b, cs, ct, h, w, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cs, h, w, generator=g, dtype=dtype), torch.randn(
        b, ct, h, w, generator=g, dtype=dtype
    )


@pytest.fixture(params=["fused", "aten"])
def cpu_rows(request, monkeypatch):
    """Both CPU per-pixel passes: the fused kernels and the ATen composites the CUDA path shares."""
    monkeypatch.setenv("RELKD_RELATION_KL_ROWS", request.param)
    return request.param


def test_rejects_unknown_rows_path(monkeypatch):
    monkeypatch.setenv("RELKD_RELATION_KL_ROWS", "bogus")
    fs, ft = features(1, 2, 2, 3, 3)
    with pytest.raises(ValueError, match="RELKD_RELATION_KL_ROWS"):
        relation_kl_loss(fs, ft)


@pytest.mark.parametrize("cs,ct", [(3, 3), (4, 6)])
@pytest.mark.parametrize("h,w", [(5, 4), (17, 16)])  # N = 20: one CPU tile; N = 272: the two-sweep path
def test_opcheck(cs, ct, h, w, cpu_rows):
    """Also with one side's gradient only (the backward's output_mask: None for the other), and with the
    gradients formed in the forward (grad_mask), alone or with the backward op serving the other side."""
    fs, ft = features(2, cs, ct, h, w)
    for grad_s, grad_t in [(False, False), (True, True), (True, False), (False, True)]:
        leaves = (fs.requires_grad_(grad_s), ft.requires_grad_(grad_t))
        for grad_mask in {(False, False), (grad_s, grad_t), (grad_s, False)}:
            args = (*leaves, 0.5, 1e-12, True, list(grad_mask))
            torch.library.opcheck(torch.ops.relkd.relation_kl_loss.default, args)


@pytest.mark.parametrize("tau", [0.3, 1.0])
@pytest.mark.parametrize("cs,ct", [(3, 3), (2, 5)])
def test_gradcheck_float64(cs, ct, tau, cpu_rows, cpu_isa):
    fs, ft = features(2, cs, ct, 3, 4)
    fs.requires_grad_(), ft.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: relation_kl_loss(a, b, tau), (fs, ft))


@pytest.mark.parametrize("cs,ct", [(3, 3), (2, 5)])
def test_gradcheck_float64_student_only(cs, ct, cpu_rows):
    """A detached teacher, as in distillation: the backward forms the student's gradient alone."""
    fs, ft = features(2, cs, ct, 3, 4)
    assert torch.autograd.gradcheck(lambda a: relation_kl_loss(a, ft, 0.5), (fs.requires_grad_(),))


# The gradients asked for (the backward's output_mask) for each side's requires_grad.
MASKS = {"student": (True, False), "teacher": (False, True), "both": (True, True)}


def masked_grads(fn, fs, ft, mask, *args):
    """Gradients of fn(fs, ft, *args) w.r.t. the sides in mask; the other side does not require grad."""
    leaves = [f.detach().clone().requires_grad_(m) for f, m in zip((fs, ft), mask)]
    wanted = [leaf for leaf, m in zip(leaves, mask) if m]
    return torch.autograd.grad(fn(*leaves, *args), wanted)


@pytest.mark.parametrize("wanted", list(MASKS))
@pytest.mark.parametrize("cs,ct,dtype", [(5, 5, torch.float64), (3, 7, torch.float64), (6, 6, torch.float32)])
def test_only_the_gradients_asked_for(wanted, cs, ct, dtype, cpu_rows, cpu_isa):
    """Student only (a detached teacher), teacher only, both: each gradient is the reference's."""
    fs, ft = features(2, cs, ct, 6, 5, dtype=dtype)
    got = masked_grads(relation_kl_loss, fs, ft, MASKS[wanted], 0.5)
    want = masked_grads(relation_kl_loss_reference, fs.double(), ft.double(), MASKS[wanted], 0.5)
    assert len(got) == len(want) == sum(MASKS[wanted])
    for a, e in zip(got, want):
        assert rel_err(a.double(), e) < (1e-9 if dtype == torch.float64 else 1e-4)


@pytest.mark.parametrize("wanted", list(MASKS))
def test_backward_op_returns_none_for_a_gradient_not_asked_for(wanted, cpu_rows):
    """The raw op with output_mask: a masked-out gradient is None (ATen's convention, as in
    native_batch_norm_backward), the other is exactly the one of the full backward."""
    fs, ft = features(2, 4, 6, 5, 4)
    stats = torch.ops.relkd.relation_kl_loss(fs, ft, 0.5, 1e-12, True)[1]
    one = torch.tensor(1.0, dtype=fs.dtype)
    full = torch.ops.relkd.relation_kl_loss_backward(one, fs, ft, stats, 0.5, 1e-12, [True, True])
    got = torch.ops.relkd.relation_kl_loss_backward(one, fs, ft, stats, 0.5, 1e-12, list(MASKS[wanted]))
    for g, f, m in zip(got, full, MASKS[wanted]):
        assert (g is not None and torch.equal(g, f)) if m else g is None
    none = torch.ops.relkd.relation_kl_loss_backward(one, fs, ft, stats, 0.5, 1e-12, [False, False])
    assert tuple(none) == (None, None)


@pytest.mark.parametrize("wanted", list(MASKS))
@pytest.mark.parametrize("cs,ct,dtype", [(5, 5, torch.float64), (3, 7, torch.float64), (6, 6, torch.float32)])
@pytest.mark.parametrize("h,w", [(1, 1), (6, 5), (16, 16), (17, 16), (23, 29), (33, 33)])
def test_gradients_formed_in_the_forward_are_the_backward_ops(wanted, cs, ct, dtype, h, w, cpu_rows, cpu_isa):
    """grad_mask: the forward's gradients (per unit upstream gradient) are the backward op's, for one CPU
    tile per sample (N ≤ 256), several tiles in one sweep (N ≤ 1024) and two sweeps (N = 1089); a side not
    asked for is an empty tensor."""
    fs, ft = features(2, cs, ct, h, w, seed=h * w, dtype=dtype)
    _, stats, *formed = torch.ops.relkd.relation_kl_loss(fs, ft, 0.5, 1e-12, True, list(MASKS[wanted]))
    one = torch.tensor(1.0, dtype=dtype)
    late = torch.ops.relkd.relation_kl_loss_backward(one, fs, ft, stats, 0.5, 1e-12, list(MASKS[wanted]))
    for got, want, f, m in zip(formed, late, (fs, ft), MASKS[wanted]):
        if not m:
            assert got.shape == (0,) and want is None
            continue
        assert got.shape == f.shape and got.dtype == f.dtype
        # the terms come from the row sums here, from the saved statistics in the backward op (at N = 1 the
        # gradient is 0, and the backward op's rounding leaves ~1e-48: hence the floor of the scale)
        scale = max(float(want.abs().max()), 1e-3)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert float((got.double() - want.double()).abs().max()) <= tol * scale


@pytest.mark.parametrize("h,w", [(6, 5), (17, 16)])
def test_autograd_takes_formed_gradients_and_the_backward_op_alike(h, w):
    """Through autograd: both sides formed in the forward, neither (the backward op), or the student's only
    while both need one (the backward op serves the teacher): the same gradients."""
    fs, ft = features(2, 4, 6, h, w)
    results = []
    for grad_mask in ([True, True], [False, False], [True, False]):
        leaves = (fs.clone().requires_grad_(), ft.clone().requires_grad_())
        loss = torch.ops.relkd.relation_kl_loss(*leaves, 0.5, 1e-12, True, grad_mask)[0]
        results.append(torch.autograd.grad(3.0 * loss, leaves))
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            assert rel_err(a, e) < 1e-12


@pytest.mark.parametrize("threads", [1, 2])
def test_one_sample_on_several_threads_takes_two_sweeps_alike(threads):
    """B = 1 with N > 256: one sweep on one thread; with more threads than samples the two parallel sweeps
    (one task per sample would leave a thread idle). The gradients are the backward op's either way."""
    torch.set_num_threads(threads)  # the conftest fixture restores it
    fs, ft = features(1, 4, 4, 23, 29, seed=3)
    _, stats, gs, gt = torch.ops.relkd.relation_kl_loss(fs, ft, 0.5, 1e-12, True, [True, True])
    one = torch.tensor(1.0, dtype=fs.dtype)
    late = torch.ops.relkd.relation_kl_loss_backward(one, fs, ft, stats, 0.5, 1e-12, [True, True])
    for got, want in zip((gs, gt), late):
        assert rel_err(got, want) < 1e-12


def _forward_tile_gemms(h: int, w: int, grad_mask: list[bool]) -> int:
    """The aten::mm calls (the CPU tiles' inner products) of one forward, with one thread."""
    fs, ft = features(1, 3, 3, h, w)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.ops.relkd.relation_kl_loss(fs, ft, 0.5, 1e-12, True, grad_mask)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::mm")


def test_gradients_formed_in_one_sweep_form_each_tile_once():
    """Up to N = 1024 the forward's gradients reuse its tiles; above, the second sweep forms them again."""
    torch.set_num_threads(1)  # parallel_for runs on the profiled thread (the conftest fixture restores it)
    alone = _forward_tile_gemms(23, 29, [False, False])
    assert alone > 0 and _forward_tile_gemms(23, 29, [True, False]) == alone
    assert _forward_tile_gemms(33, 33, [True, False]) == 2 * _forward_tile_gemms(33, 33, [False, False])


def test_create_graph_takes_the_backward_op():
    """Under create_graph the forward's gradients (constants) are not used: the backward op serves, so torch
    warns that it has no autograd formula and refuses a second differentiation, instead of a second-order
    result silently missing the loss's terms."""
    fs, ft = features(2, 3, 3, 4, 4)
    fs.requires_grad_()
    (g,) = torch.autograd.grad(relation_kl_loss(fs, ft, 0.5), fs, create_graph=True)
    (plain,) = torch.autograd.grad(relation_kl_loss(fs, ft, 0.5), fs)
    assert rel_err(g.detach(), plain) < 1e-12
    with pytest.warns(UserWarning, match="relation_kl_loss_backward: an autograd kernel was not registered"):
        with pytest.raises(RuntimeError, match="not have been used in the graph"):
            torch.autograd.grad(g.sum(), fs)


def test_the_wrapper_forms_the_gradients_autograd_will_need():
    from relkd_bench.ops.relation_kl import _grads_to_form

    fs, ft = features(1, 2, 2, 3, 3)
    assert _grads_to_form(fs.requires_grad_(), ft) == [True, False]
    with torch.no_grad():
        assert _grads_to_form(fs, ft) == [False, False]


def _backward_gemms(mask) -> int:
    """The aten::addmm_ calls of one backward (the CPU tiles' G·X̂ products), with one thread."""
    fs, ft = features(2, 3, 3, 20, 20)
    stats = torch.ops.relkd.relation_kl_loss(fs, ft, 0.5, 1e-12, True)[1]
    one = torch.tensor(1.0, dtype=fs.dtype)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.ops.relkd.relation_kl_loss_backward(one, fs, ft, stats, 0.5, 1e-12, list(mask))
    return sum(e.count for e in prof.key_averages() if e.key == "aten::addmm_")


def test_a_gradient_not_asked_for_is_not_computed():
    """The masked side's tile GEMMs never run: each side alone makes half the calls of both."""
    torch.set_num_threads(1)  # parallel_for runs on the profiled thread (the conftest fixture restores it)
    both = _backward_gemms((True, True))
    assert both > 0
    assert _backward_gemms((True, False)) == _backward_gemms((False, True)) == both // 2
    assert _backward_gemms((False, False)) == 0


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 4.0])
@pytest.mark.parametrize("cs,ct", [(1, 1), (8, 8), (64, 64), (8, 64), (64, 1)])
@pytest.mark.parametrize("b,h,w", [(1, 1, 1), (2, 5, 17), (3, 17, 5), (1, 32, 32)])
def test_matches_reference(b, cs, ct, h, w, tau, cpu_rows, cpu_isa):
    fs, ft = features(b, cs, ct, h, w, seed=b * 100 + cs + ct + h)
    assert_matches(relation_kl_loss, relation_kl_loss_reference, fs, ft, tau)


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 3),
    cs=st.sampled_from([1, 8, 64]),
    ct=st.sampled_from([1, 8, 64]),
    h=st.sampled_from([1, 5, 17, 32]),
    w=st.sampled_from([1, 5, 17, 32]),
    tau=st.sampled_from([0.1, 0.5, 1.0, 4.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_hypothesis(b, cs, ct, h, w, tau, seed):
    """The issue's whole grid (B 1..3, C ∈ {1, 8, 64} each side, H, W ∈ {1, 5, 17, 32}, four τ), sampled."""
    fs, ft = features(b, cs, ct, h, w, seed=seed)
    assert_matches(relation_kl_loss, relation_kl_loss_reference, fs, ft, tau)


def test_several_tiles_and_partial_tiles(cpu_isa):
    """N = 33·31 = 1023 pixels: 4 row blocks of the CPU tiling, the last one partial, odd block count."""
    fs, ft = features(2, 5, 7, 33, 31)
    assert_matches(relation_kl_loss, relation_kl_loss_reference, fs, ft, 0.5)


@pytest.mark.parametrize("pool,h,w", [(2, 8, 6), (4, 17, 17), (3, 5, 7)])
def test_pool(pool, h, w, cpu_isa):
    """pool > 1 average-pools both maps (ceil_mode: partial edge windows) before the relations."""
    fs, ft = features(2, 4, 6, h, w)
    assert_matches(relation_kl_loss, relation_kl_loss_reference, fs, ft, 0.5, pool)
    pooled = torch.nn.functional.avg_pool2d(fs, pool, pool, ceil_mode=True)
    pooled_t = torch.nn.functional.avg_pool2d(ft, pool, pool, ceil_mode=True)
    torch.testing.assert_close(relation_kl_loss(fs, ft, 0.5, pool), relation_kl_loss(pooled, pooled_t, 0.5))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "strided"])
def test_layouts(layout, cpu_rows):
    fs, ft = features(2, 8, 3, 7, 5)
    expected = grads(relation_kl_loss_reference, fs, ft, 0.5)
    actual = grads(relation_kl_loss, layouts(fs)[layout], layouts(ft)[layout], 0.5)
    torch.testing.assert_close(actual, expected)


def test_gradients_are_contiguous(cpu_rows):
    """NCHW in, NCHW gradients out (channels-last ones slowed avg_pool2d's backward 2.6x at pool = 4)."""
    fs, ft = features(2, 8, 3, 7, 5, dtype=torch.float32)
    _, g = grads(relation_kl_loss, fs, ft, 0.5)
    assert all(x.is_contiguous() for x in g)


def test_zero_pixel_vectors(cpu_rows, cpu_isa):
    """Zero pixels have |x̂| = 0: their rows are uniform and the per-row offsets differ (general path)."""
    fs, ft = features(2, 4, 6, 5, 5)
    fs[0, :, 1, 2] = 0
    fs[1, :, 4, :] = 0
    ft[0, :, 0, 0] = 0
    for tau in (0.05, 1.0):
        assert_matches(relation_kl_loss, relation_kl_loss_reference, fs, ft, tau)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_logits(dtype, cpu_isa):
    """τ = 0.05 with aligned features (logits up to ±20, rows nearly one-hot): finite and exact."""
    g = torch.Generator().manual_seed(3)
    base = torch.randn(2, 16, 1, 1, generator=g, dtype=torch.float64)
    fs = base.expand(2, 16, 8, 8) + 1e-3 * torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    ft = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    loss, g_native = grads(relation_kl_loss, fs.to(dtype), ft.to(dtype), 0.05)
    assert torch.isfinite(loss) and all(torch.isfinite(x).all() for x in g_native)
    ref_loss, g_ref = grads(relation_kl_loss_reference, fs, ft, 0.05)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert rel_err(loss, ref_loss) < tol
    for a, e in zip(g_native, g_ref):
        assert rel_err(a, e) < 10 * tol


def test_tiny_temperature_is_finite():
    """τ below 2/690 takes the clamped exponential; rows are one-hot, nothing overflows or underflows."""
    fs, ft = features(1, 4, 4, 6, 6)
    fs[0, :, 0, 0] = 0
    loss, g = grads(relation_kl_loss, fs, ft, 1e-3)
    assert torch.isfinite(loss) and all(torch.isfinite(x).all() for x in g)


def _relation_kl_mp(fs: torch.Tensor, ft: torch.Tensor, tau: float) -> float:
    """The definition in 50-digit arithmetic (unit pixel vectors, relations, KL per row)."""
    import mpmath as mp

    with mp.workdps(50):
        total = mp.mpf(0)
        for b in range(fs.shape[0]):
            units = []
            for f in (fs[b].flatten(1), ft[b].flatten(1)):
                cols = [[mp.mpf(float(v)) for v in f[:, i]] for i in range(f.shape[1])]
                norms = [max(mp.sqrt(mp.fsum(x * x for x in c)), mp.mpf(1e-12)) for c in cols]
                units.append([[v / n for v in c] for c, n in zip(cols, norms)])
            rel = [[[mp.fsum(a * c for a, c in zip(ui, uj)) / tau for uj in u] for ui in u] for u in units]
            total += softmax_kl_mp(rel[1], rel[0])
        return float(tau**2 * total / (fs.shape[0] * fs.shape[2] * fs.shape[3]))


@pytest.mark.parametrize("tau", [1e-3, 1e-2, 1e3])
@pytest.mark.parametrize("dtype,rtol,atol", [(torch.float64, 1e-9, 1e-15), (torch.float32, 1e-6, 1e-12)])
def test_ends_of_the_temperature_range_against_50_digits(tau, dtype, rtol, atol):
    """At both ends of the accepted range [1e-3, 1e3] the loss matches the definition in 50-digit arithmetic
    (measured: 4e-11 relative in float64 at τ = 1e3; beyond, the rounding grows like eps·τ²). At small τ
    the rows are nearly one-hot and the loss tiny (~1e-46 at τ = 1e-3): there the bound is absolute."""
    fs, ft = features(1, 4, 4, 3, 3)
    fs, ft = fs.to(dtype), ft.to(dtype)
    exact = _relation_kl_mp(fs, ft, tau)
    assert abs(float(relation_kl_loss(fs, ft, tau)) - exact) <= rtol * abs(exact) + atol


def test_loss_is_never_negative(cpu_rows):
    """KL ≥ 0: identical inputs (where rounding used to leave the sum a little below 0) give ≥ 0."""
    for shape in [(1, 3, 1, 1), (2, 5, 3, 4)]:
        fs = torch.randn(shape)
        assert float(relation_kl_loss(fs, fs.clone(), 0.5)) >= 0


@pytest.mark.parametrize("delta", [1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0, 4.0])
@pytest.mark.parametrize("cs,ct", [(16, 16), (64, 64), (16, 24), (8, 64)])
def test_float32_accuracy_near_teacher(delta, cs, ct, tau, cpu_rows, cpu_isa):
    """Student ≈ teacher (late training): float32 within 1e-5 (loss) / 1e-4 (grads) of float64.

    The float64 reference sees the unrounded features, so the float32 rounding of the inputs counts against
    the kernel too (measured: that alone moves the gradients by ~3e-5 at δ = 1e-3).
    """
    fs, ft = near_pair((2, cs, 16, 16), (2, cs, 16, 16), delta, seed=cs)
    if ct != cs:  # a wider teacher whose extra channels are small: relations still nearly equal
        ft = torch.cat([ft, delta * torch.randn(2, ct - cs, 16, 16, dtype=torch.float64)], dim=1)
    loss64, g64 = grads(relation_kl_loss_reference, fs, ft, tau)
    loss32, g32 = grads(relation_kl_loss, fs.float(), ft.float(), tau)
    assert rel_err(loss32, loss64) < 1e-5
    for a, e in zip(g32, g64):
        assert rel_err(a, e) < 1e-4


def test_memory_is_not_quadratic():
    """N = 16384 pixels: one N×N float32 relation matrix alone is 1 GiB; the op stays under 100 MB."""
    fs, ft = features(1, 64, 64, 128, 128, dtype=torch.float32)
    leaves = (fs.requires_grad_(), ft.requires_grad_())

    def run():
        return torch.autograd.grad(relation_kl_loss(*leaves), leaves)

    assert peak_extra_mb(run, torch.device("cpu")) < 100


def test_torch_compile_fullgraph():
    fs, ft = features(2, 4, 6, 5, 5, dtype=torch.float32)

    def f(a, b):
        return relation_kl_loss(a, b, 0.5) + relation_kl_loss(a, b, 2.0, pool=2)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(fs, ft), f(fs, ft))


def test_torch_compile_student_gradient_only():
    """A compiled backward with a detached teacher (the fake backward returns None for ft)."""
    fs, ft = features(2, 4, 6, 5, 5, dtype=torch.float32)

    def f(a, b):
        return relation_kl_loss(a, b.detach(), 0.5)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, b = fs.clone().requires_grad_(), fs.clone().requires_grad_()
    compiled(a, ft).backward()
    f(b, ft).backward()
    torch.testing.assert_close(a.grad, b.grad)


BAD_INPUTS = [
    (lambda fs, ft: relation_kl_loss(fs[0], ft), ValueError, "fs must be 4-D"),
    (lambda fs, ft: relation_kl_loss(fs, ft[:1]), ValueError, "batch sizes differ"),
    (lambda fs, ft: relation_kl_loss(fs, ft[..., :2]), ValueError, "spatial sizes differ"),
    (lambda fs, ft: relation_kl_loss(fs.long(), ft), TypeError, "floating-point"),
    (lambda fs, ft: relation_kl_loss(fs, ft.double()), TypeError, "same dtype"),
    (lambda fs, ft: relation_kl_loss(fs, ft, 0.0), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda fs, ft: relation_kl_loss(fs, ft, -1.0), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda fs, ft: relation_kl_loss(fs, ft, float("inf")), ValueError, "temperature must be in [0.001"),
    (lambda fs, ft: relation_kl_loss(fs, ft, 1e9), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda fs, ft: relation_kl_loss(fs, ft, "1"), TypeError, "temperature must be a real number"),
    (lambda fs, ft: relation_kl_loss(fs, ft, True), TypeError, "temperature must be a real number"),
    (lambda fs, ft: relation_kl_loss(fs, ft, pool=0), ValueError, "pool must be in [1, max(H, W) = 3]"),
    (lambda fs, ft: relation_kl_loss(fs, ft, pool=2**31), ValueError, "pool must be in [1, max(H, W) = 3]"),
    (lambda fs, ft: relation_kl_loss(fs, ft, pool=2.0), TypeError, "pool must be an int"),
    (lambda fs, ft: relation_kl_loss(fs, ft, pool=True), TypeError, "pool must be an int"),
    (lambda fs, ft: relation_kl_loss(fs, ft, eps=0.0), ValueError, "eps"),
    (lambda fs, ft: relation_kl_loss(fs.half(), ft.half()), TypeError, "float32 and float64"),
]


@pytest.mark.parametrize("call,exc,message", BAD_INPUTS)
def test_bad_input(call, exc, message):
    assert_bad_input("relation_kl_loss", call, features(2, 3, 4, 3, 3, dtype=torch.float32), exc, message)


def test_raw_op_checks():
    fs, ft = features(2, 3, 4, 3, 3)
    with pytest.raises(ValueError, match=r"relation_kl_loss: temperature must be in \[0.001, 1000\]"):
        torch.ops.relkd.relation_kl_loss(fs, ft, 0.0, 1e-12, True)
    with pytest.raises(ValueError, match="relation_kl_loss: spatial sizes differ"):
        torch.ops.relkd.relation_kl_loss(fs, ft[..., :2], 1.0, 1e-12, True)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["fs", "ft"])
def test_non_finite_input(value, which):
    inputs = dict(zip(("fs", "ft"), features(2, 3, 4, 3, 3, dtype=torch.float32)))
    inputs[which][1, 2, 0, 1] = value
    assert not torch.isfinite(non_finite_result(relation_kl_loss, "relation_kl_loss", inputs, which))


@pytest.fixture(params=["panels", "fused"])
def cuda_path(request, monkeypatch):
    """Both CUDA sweeps: the panel default and the experimental fused kernel (RELKD_RELATION_KL_CUDA)."""
    monkeypatch.setenv("RELKD_RELATION_KL_CUDA", request.param)
    return request.param


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("cs,ct,h,w", [(16, 16, 17, 16), (8, 32, 33, 40)])
def test_cuda_matches_float64_reference(cuda_path, dtype, tol, cs, ct, h, w):
    fn, ref = relation_kl_loss, relation_kl_loss_reference
    assert_cuda_matches_float64(fn, ref, features(2, cs, ct, h, w), dtype, tol, (0.5,), (0.5,))


@pytest.mark.cuda
def test_cuda_float64_and_zero_pixels(cuda_path):
    fs, ft = features(2, 4, 6, 9, 7)
    fs[0, :, 1, 2] = 0
    cuda = lambda a, b, tau: relation_kl_loss(a.cuda(), b.cuda(), tau).cpu()  # noqa: E731
    for tau in (0.05, 1.0):
        assert_matches(cuda, relation_kl_loss_reference, fs, ft, tau)


@pytest.mark.cuda
@pytest.mark.parametrize("cs,ct,h,w", [(64, 64, 64, 64), (24, 40, 67, 33)])
def test_cuda_several_tiles_near_teacher(cuda_path, cs, ct, h, w):
    """Many 64-row tiles with partial edges, channels beyond one shared-memory stage, δ = 1e-3."""
    fs, ft = near_pair((2, cs, h, w), (2, cs, h, w), 1e-3, seed=cs)
    if ct != cs:
        ft = torch.cat([ft, 1e-3 * torch.randn(2, ct - cs, h, w, dtype=torch.float64)], dim=1)
    loss64, g64 = grads(relation_kl_loss_reference, fs, ft, 0.5)
    loss, g = grads(relation_kl_loss, fs.cuda().float(), ft.cuda().float(), 0.5)
    assert rel_err(loss.cpu(), loss64) < 1e-5
    for a, e in zip(g, g64):
        assert rel_err(a.cpu(), e) < (1e-4 if cs == ct else 1e-3)  # Cs ≠ Ct: float32 tiles on the GPU


@pytest.mark.cuda
def test_cuda_rejects_unknown_path(monkeypatch):
    monkeypatch.setenv("RELKD_RELATION_KL_CUDA", "bogus")
    fs, ft = features(1, 2, 2, 3, 3, dtype=torch.float32)
    with pytest.raises(ValueError, match="RELKD_RELATION_KL_CUDA"):
        relation_kl_loss(fs.cuda(), ft.cuda())


@pytest.mark.cuda
@pytest.mark.parametrize("wanted", list(MASKS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_only_the_gradients_asked_for(cuda_path, wanted, dtype):
    """Student only, teacher only, both on each CUDA sweep; the raw op returns None for a side not wanted."""
    fs, ft = features(2, 8, 24, 9, 13)
    cuda = lambda a, b, tau: relation_kl_loss(a.cuda().to(dtype), b.cuda().to(dtype), tau)  # noqa: E731
    got = masked_grads(cuda, fs, ft, MASKS[wanted], 0.5)
    want = masked_grads(relation_kl_loss_reference, fs, ft, MASKS[wanted], 0.5)
    for a, e in zip(got, want):
        assert rel_err(a.cpu().double(), e) < (1e-9 if dtype == torch.float64 else 1e-3)
    x, y = fs.cuda(), ft.cuda()
    _, stats = torch.ops.relkd.relation_kl_loss(x, y, 0.5, 1e-12, True)
    one = torch.tensor(1.0, dtype=x.dtype, device=x.device)
    out = torch.ops.relkd.relation_kl_loss_backward(one, x, y, stats, 0.5, 1e-12, list(MASKS[wanted]))
    assert [g is not None for g in out] == list(MASKS[wanted])


@pytest.mark.cuda
def test_cuda_opcheck(cuda_path):
    fs, ft = features(2, 4, 6, 5, 4)
    args = (fs.cuda().requires_grad_(), ft.cuda().requires_grad_(), 0.5, 1e-12, True)
    torch.library.opcheck(torch.ops.relkd.relation_kl_loss.default, args)
