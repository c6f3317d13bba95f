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
from relkd_bench.ops import cwd_loss, cwd_loss_reference

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")

CHUNK = 8192  # pixels per chunk of the CPU kernel (csrc/cpu/cwd.cpp)


def maps(b, c, h, w, seed=0, dtype=torch.float64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(b, c, h, w, generator=g, dtype=dtype) for _ in range(2))


# Which inputs require a gradient: distillation detaches the teacher ("student").
WANTS = {"student": (True, False), "teacher": (False, True), "both": (True, True)}
MASKS = [[True, True], [True, False], [False, True], [False, False]]


def test_opcheck():
    ys, yt = maps(2, 3, 5, 4)
    for wants in ((False, False), *WANTS.values()):
        args = (ys.requires_grad_(wants[0]), yt.requires_grad_(wants[1]), 2.0, True)
        torch.library.opcheck(torch.ops.relkd.cwd_loss.default, args)


@pytest.mark.parametrize("mask", MASKS, ids=["both", "student", "teacher", "none"])
def test_opcheck_backward(mask):
    ys, yt = maps(2, 3, 5, 4)
    stats = torch.ops.relkd.cwd_loss(ys, yt, 2.0, True)[1]
    grad = torch.tensor(0.7, dtype=ys.dtype)
    torch.library.opcheck(torch.ops.relkd.cwd_loss_backward.default, (grad, ys, yt, stats, 2.0, mask))


def test_stats_are_the_rows_lse_and_kl():
    """The forward's second output: float64 [B, C, 3] of lse(ys/τ), lse(yt/τ) and KL(p_t ‖ p_s) per row."""
    ys, yt = maps(2, 3, 5, 7)
    loss, stats = torch.ops.relkd.cwd_loss(ys, yt, 2.0, True)
    lp_s, lp_t = (torch.log_softmax(y.flatten(2) / 2.0, 2) for y in (ys, yt))
    expected = torch.stack(
        [torch.logsumexp(ys.flatten(2) / 2.0, 2), torch.logsumexp(yt.flatten(2) / 2.0, 2),
         (lp_t.exp() * (lp_t - lp_s)).sum(2)], 2
    )
    assert stats.dtype == torch.float64 and stats.shape == (2, 3, 3)
    torch.testing.assert_close(stats, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(loss, 4.0 * stats[..., 2].mean(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_gradcheck_float64(temperature, cpu_isa):
    ys, yt = maps(2, 3, 4, 3)
    assert torch.autograd.gradcheck(
        lambda a, b: cwd_loss(a, b, temperature), (ys.requires_grad_(), yt.requires_grad_())
    )


def test_gradcheck_float64_teacher_detached():
    ys, yt = maps(2, 3, 4, 3)
    assert torch.autograd.gradcheck(lambda a: cwd_loss(a, yt, 2.0), (ys.requires_grad_(),))


def test_one_pixel_rows_give_zero():
    """N = 1: every softmax is 1, the loss and both gradients are exactly 0."""
    ys, yt = maps(2, 3, 1, 1)
    loss, (gs, gt) = grads(cwd_loss, ys, yt, 2.0)
    assert float(loss) == 0.0 and not gs.any() and not gt.any()


@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("c", [1, 3])
def test_only_the_gradients_asked_for(wants, dtype, tol, c, cpu_isa):
    """An input that needs no gradient gets None; the other gradient is the reference's (float64)."""
    ys, yt = (x.to(dtype) for x in maps(2, c, 7, 6))
    args = [x.clone().requires_grad_(w) for x, w in zip((ys, yt), wants)]
    ref = [x.double().requires_grad_(w) for x, w in zip((ys, yt), wants)]
    got = torch.autograd.grad(cwd_loss(*args, 2.0), [a for a in args if a.requires_grad])
    want = torch.autograd.grad(cwd_loss_reference(*ref, 2.0), [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert a.dtype == dtype and rel_err(a, e) < tol


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backward_op_output_mask(dtype):
    """torch.ops.relkd.cwd_loss_backward returns None for a gradient its mask leaves out; the other is
    bit-identical to the unmasked call's."""
    ys, yt = (x.to(dtype) for x in maps(2, 3, 4, 4))
    stats = torch.ops.relkd.cwd_loss(ys, yt, 2.0, True)[1]
    grad = torch.tensor(0.7, dtype=dtype)
    full = torch.ops.relkd.cwd_loss_backward(grad, ys, yt, stats, 2.0, [True, True])
    for mask in MASKS[1:]:
        out = torch.ops.relkd.cwd_loss_backward(grad, ys, yt, stats, 2.0, mask)
        for got, expected, wanted in zip(out, full, mask, strict=True):
            if wanted:
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
            else:
                assert got is None


@pytest.mark.parametrize("b", [1, 2, 4])
@pytest.mark.parametrize("c", [1, 2, 3, 19])
@pytest.mark.parametrize("h,w", [(1, 1), (1, 7), (7, 16), (33, 33)])
def test_matches_reference(b, c, h, w, cpu_isa):
    assert_matches(cwd_loss, cwd_loss_reference, *maps(b, c, h, w, seed=b * c))


@pytest.mark.parametrize("h,w", [(64, 128), (91, 91), (97, 211)])
@pytest.mark.parametrize("temperature", [0.1, 1.0, 4.0])
def test_matches_reference_rows_of_several_chunks(h, w, temperature, cpu_isa):
    """Rows of exactly one chunk, just over one, and several with a partial last one."""
    assert_matches(cwd_loss, cwd_loss_reference, *maps(2, 2, h, w, seed=h), temperature)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.sampled_from([1, 2, 3, 8]),
    h=st.sampled_from([1, 7, 16, 33]),
    w=st.sampled_from([1, 7, 16, 33]),
    temperature=st.sampled_from([0.1, 1.0, 4.0, 20.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_hypothesis(b, c, h, w, temperature, seed):
    ys, yt = maps(b, c, h, w, seed=seed)
    assert_matches(cwd_loss, cwd_loss_reference, ys, yt, temperature)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_float32_and_float64_against_float64_reference(dtype, temperature):
    ys, yt = (x.to(dtype) for x in maps(2, 3, 19, 23, seed=5))
    loss, g = grads(cwd_loss, ys, yt, temperature)
    ref_loss, ref_g = grads(cwd_loss_reference, ys.double(), yt.double(), temperature)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert loss.dtype == dtype and rel_err(loss, ref_loss) < tol
    for a, e in zip(g, ref_g):
        assert a.dtype == dtype and rel_err(a, e) < 10 * tol


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "strided"])
def test_layouts(layout):
    ys, yt = maps(2, 5, 7, 5)
    expected = grads(cwd_loss_reference, ys, yt)
    torch.testing.assert_close(grads(cwd_loss, layouts(ys)[layout], layouts(yt)[layout]), expected)


def test_deterministic_across_thread_counts():
    """Chunks are combined in a fixed order: the same bits with 1 thread and with several."""
    ys, yt = maps(2, 2, 97, 211, seed=1, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = grads(cwd_loss, ys, yt, 1.0)
        torch.set_num_threads(max(2, threads))
        many = grads(cwd_loss, ys, yt, 1.0)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(one, many, rtol=0, atol=0)


def test_extreme_logits(cpu_isa):
    """Maps of ±1e4 at τ = 0.05: softmax saturates, nothing overflows."""
    ys, yt = maps(2, 4, 5, 5, scale=1e4)
    loss, g = grads(cwd_loss, ys, yt, 0.05)
    ref_loss, ref_g = grads(cwd_loss_reference, ys, yt, 0.05)
    assert torch.isfinite(loss) and all(torch.isfinite(x).all() for x in g)
    torch.testing.assert_close(loss, ref_loss)


@pytest.mark.parametrize("delta", [1e-1, 1e-2, 1e-3, 1e-4])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_float32_accuracy_near_teacher(delta, temperature, cpu_isa):
    """float32 input within 1e-5 (loss) / 1e-4 (grads) of float64 on the same values as the KL shrinks
    like δ² (the kernel works in float64 throughout)."""
    ys, yt = (x.float() for x in near_pair((2, 2, 48, 48), (2, 2, 48, 48), delta))
    loss64, g64 = grads(cwd_loss_reference, ys.double(), yt.double(), temperature)
    loss32, g32 = grads(cwd_loss, ys, yt, temperature)
    assert rel_err(loss32, loss64) < 1e-5
    for a, e in zip(g32, g64):
        assert rel_err(a, e) < 1e-4


@pytest.mark.parametrize("scale,temperature", [(30.0, 0.1), (10.0, 1.0)])
def test_float32_accuracy_far_from_teacher(scale, temperature, cpu_isa):
    """Peaked maps whose maxima sit at different pixels: float32 stays exact."""
    ys, yt = (x.float() for x in maps(2, 2, 40, 40, seed=3, scale=scale))
    loss64, g64 = grads(cwd_loss_reference, ys.double(), yt.double(), temperature)
    loss32, g32 = grads(cwd_loss, ys, yt, temperature)
    assert rel_err(loss32, loss64) < 1e-6
    for a, e in zip(g32, g64):
        assert rel_err(a, e) < 1e-5


@pytest.mark.parametrize("temperature", [1e-3, 1e3])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-6)])
def test_ends_of_the_temperature_range_against_50_digits(temperature, dtype, rtol):
    """At both ends of the accepted range [1e-3, 1e3] the loss matches the definition in 50 digits."""
    ys, yt = (x.to(dtype) for x in maps(1, 3, 3, 3))
    rows = [[(z[0].flatten(1).double() / temperature)[c].tolist() for c in range(3)] for z in (yt, ys)]
    exact = float(temperature**2 * softmax_kl_mp(*rows) / 3)
    assert abs(float(cwd_loss(ys, yt, temperature)) - exact) <= rtol * exact


def test_loss_is_never_negative():
    for dtype in (torch.float32, torch.float64):
        ys = maps(2, 5, 13, 11, dtype=dtype)[0]
        assert float(cwd_loss(ys, ys.clone(), 2.0)) >= 0


def test_shift_invariance():
    """A constant added to a channel map changes no softmax over its pixels."""
    ys, yt = maps(2, 3, 6, 6)
    shift = torch.randn(2, 3, 1, 1, dtype=torch.float64)
    torch.testing.assert_close(cwd_loss(ys + shift, yt, 2.0), cwd_loss(ys, yt, 2.0))


def test_losses_module_uses_the_op():
    """relkd_bench.losses.ChannelWiseKD runs this op, with the teacher detached."""
    losses = pytest.importorskip("relkd_bench.losses")
    assert losses.cwd_loss is cwd_loss
    ys, yt = (x.float().requires_grad_() for x in maps(2, 2, 6, 6))
    loss = losses.ChannelWiseKD(2.0)(ys, yt)
    torch.testing.assert_close(loss, cwd_loss_reference(ys.detach(), yt.detach(), 2.0))
    loss.backward()
    assert ys.grad is not None and yt.grad is None


def test_torch_compile_fullgraph():
    ys, yt = maps(2, 3, 5, 5, dtype=torch.float32)
    compiled = torch.compile(lambda a, b: cwd_loss(a, b, 2.0), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(ys, yt), cwd_loss(ys, yt, 2.0))


def test_torch_compile_backward_teacher_detached():
    ys, yt = maps(2, 3, 5, 5, dtype=torch.float32)
    compiled = torch.compile(lambda a, b: cwd_loss(a, b.detach(), 2.0), fullgraph=True, backend="aot_eager")
    a, t = ys.clone().requires_grad_(), yt.clone().requires_grad_()
    compiled(a, t).backward()
    assert t.grad is None
    torch.testing.assert_close(a.grad, grads(cwd_loss, ys, yt, 2.0)[1][0])


BAD_INPUTS = [
    (lambda ys, yt: cwd_loss(ys[0], yt), ValueError, "ys must be 4-D"),
    (lambda ys, yt: cwd_loss(ys, yt[None]), ValueError, "yt must be 4-D"),
    (lambda ys, yt: cwd_loss(ys, yt[:1]), ValueError, "batch sizes differ"),
    (lambda ys, yt: cwd_loss(ys, yt[:, :2]), ValueError, "one shape [B, C, H, W] (channel counts 3 vs 2)"),
    (lambda ys, yt: cwd_loss(ys, yt[..., :2]), ValueError, "one shape"),
    (lambda ys, yt: cwd_loss(ys[:, :, :0], yt[:, :, :0]), ValueError, "ys is empty"),
    (lambda ys, yt: cwd_loss(ys.long(), yt.long()), TypeError, "floating-point"),
    (lambda ys, yt: cwd_loss(ys, yt.double()), TypeError, "same dtype"),
    (lambda ys, yt: cwd_loss(ys, yt.to("meta")), ValueError, "same device"),
    (lambda ys, yt: cwd_loss(ys, yt, 0.0), ValueError, "temperature must be in [0.001, 1000], got 0"),
    (lambda ys, yt: cwd_loss(ys, yt, -1.0), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda ys, yt: cwd_loss(ys, yt, float("nan")), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda ys, yt: cwd_loss(ys, yt, float("inf")), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda ys, yt: cwd_loss(ys, yt, 1e4), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda ys, yt: cwd_loss(ys, yt, None), TypeError, "temperature must be a real number"),
    (lambda ys, yt: cwd_loss(ys, yt, True), TypeError, "temperature must be a real number, got bool"),
    (lambda ys, yt: cwd_loss(ys.numpy(), yt), TypeError, "ys must be a torch.Tensor"),
    (lambda ys, yt: cwd_loss(ys.bfloat16(), yt.bfloat16()), TypeError, "float32 and float64"),
]


@pytest.mark.parametrize("call,exc,message", BAD_INPUTS)
def test_bad_input(call, exc, message):
    assert_bad_input("cwd_loss", call, maps(2, 3, 4, 4, dtype=torch.float32), exc, message)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["ys", "yt"])
def test_non_finite_input(value, which):
    inputs = dict(zip(("ys", "yt"), maps(2, 3, 4, 4, dtype=torch.float32)))
    inputs[which][1, 0, 2, 3] = value
    non_finite_result(cwd_loss, "cwd_loss", inputs, which)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_cuda_matches_float64_reference(dtype, tol):
    assert_cuda_matches_float64(cwd_loss, cwd_loss_reference, maps(2, 4, 97, 91), dtype, tol)


@pytest.mark.cuda
def test_cuda_opcheck():
    ys, yt = maps(2, 3, 5, 4)
    args = (ys.cuda().requires_grad_(), yt.cuda(), 2.0, True)
    torch.library.opcheck(torch.ops.relkd.cwd_loss.default, args)


@pytest.mark.cuda
@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
def test_cuda_only_the_gradients_asked_for(wants):
    ys, yt = maps(2, 4, 97, 91)
    args = [x.cuda().float().requires_grad_(w) for x, w in zip((ys, yt), wants)]
    ref = [x.requires_grad_(w) for x, w in zip((ys, yt), wants)]
    got = torch.autograd.grad(cwd_loss(*args, 2.0), [a for a in args if a.requires_grad])
    want = torch.autograd.grad(cwd_loss_reference(*ref, 2.0), [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert rel_err(a.cpu(), e) < 1e-5
    stats = torch.ops.relkd.cwd_loss(args[0].detach(), args[1].detach(), 2.0, True)[1]
    out = torch.ops.relkd.cwd_loss_backward(
        torch.tensor(1.0, device="cuda"), args[0].detach(), args[1].detach(), stats, 2.0, list(wants)
    )
    assert [o is not None for o in out] == list(wants)
