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
from relkd_bench.ops import kd_logits_loss, kd_logits_loss_reference

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")


def logits(b, k, h, w, seed=0, dtype=torch.float64, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(b, k, h, w, generator=g, dtype=dtype) for _ in range(2))


# Which inputs require a gradient: distillation detaches the teacher ("student").
WANTS = {"student": (True, False), "teacher": (False, True), "both": (True, True)}


def test_opcheck():
    zs, zt = logits(2, 3, 5, 4)
    for wants in ((False, False), *WANTS.values()):
        args = (zs.requires_grad_(wants[0]), zt.requires_grad_(wants[1]), 2.0, True)
        torch.library.opcheck(torch.ops.relkd.kd_logits_loss.default, args)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_gradcheck_float64(temperature, cpu_isa):
    zs, zt = logits(2, 3, 4, 3)
    assert torch.autograd.gradcheck(
        lambda a, b: kd_logits_loss(a, b, temperature), (zs.requires_grad_(), zt.requires_grad_())
    )


@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("k", [2, 5])
def test_only_the_gradients_asked_for(wants, dtype, tol, k, cpu_isa):
    """An input that needs no gradient gets None; the other gradient is the reference's (float64)."""
    zs, zt = (x.to(dtype) for x in logits(2, k, 7, 6))
    args = [x.clone().requires_grad_(w) for x, w in zip((zs, zt), wants)]
    ref = [x.double().requires_grad_(w) for x, w in zip((zs, zt), wants)]
    got = torch.autograd.grad(kd_logits_loss(*args, 2.0), [a for a in args if a.requires_grad])
    want = torch.autograd.grad(kd_logits_loss_reference(*ref, 2.0), [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert a.dtype == dtype and rel_err(a, e) < tol


def test_gradcheck_float64_teacher_detached():
    zs, zt = logits(2, 3, 4, 3)
    assert torch.autograd.gradcheck(lambda a: kd_logits_loss(a, zt, 2.0), (zs.requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backward_op_output_mask(dtype):
    """torch.ops.relkd.kd_logits_loss_backward returns None for a gradient its mask leaves out; the other is
    bit-identical to the unmasked call's."""
    zs, zt = (x.to(dtype) for x in logits(2, 3, 4, 4))
    grad = torch.tensor(0.7, dtype=dtype)
    full = torch.ops.relkd.kd_logits_loss_backward(grad, zs, zt, 2.0, [True, True])
    for mask in ([True, False], [False, True], [False, False]):
        out = torch.ops.relkd.kd_logits_loss_backward(grad, zs, zt, 2.0, mask)
        for got, expected, wanted in zip(out, full, mask, strict=True):
            if wanted:
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
            else:
                assert got is None


@pytest.mark.parametrize("b", [1, 2, 4])
@pytest.mark.parametrize("k", [1, 2, 3, 16, 64])
@pytest.mark.parametrize("h,w", [(1, 1), (7, 16), (33, 33)])
def test_matches_reference(b, k, h, w, cpu_isa):
    assert_matches(kd_logits_loss, kd_logits_loss_reference, *logits(b, k, h, w, seed=b * k))


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    k=st.sampled_from([1, 2, 3, 8, 16, 64]),
    h=st.sampled_from([1, 7, 16, 33]),
    w=st.sampled_from([1, 7, 16, 33]),
    temperature=st.sampled_from([0.1, 1.0, 4.0, 20.0]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_hypothesis(b, k, h, w, temperature, seed):
    zs, zt = logits(b, k, h, w, seed=seed)
    assert_matches(kd_logits_loss, kd_logits_loss_reference, zs, zt, temperature)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "strided"])
def test_layouts(layout):
    zs, zt = logits(2, 5, 7, 5)
    expected = grads(kd_logits_loss_reference, zs, zt)
    torch.testing.assert_close(grads(kd_logits_loss, layouts(zs)[layout], layouts(zt)[layout]), expected)


def test_extreme_logits(cpu_isa):
    """Logits of ±1e4 at T = 0.05: softmax saturates, nothing overflows."""
    zs, zt = logits(2, 4, 5, 5, scale=1e4)
    loss, g = grads(kd_logits_loss, zs, zt, 0.05)
    ref_loss, ref_g = grads(kd_logits_loss_reference, zs, zt, 0.05)
    assert torch.isfinite(loss) and all(torch.isfinite(x).all() for x in g)
    torch.testing.assert_close(loss, ref_loss)


@pytest.mark.parametrize("delta", [1e-1, 1e-2, 1e-3, 1e-4])
@pytest.mark.parametrize("k", [2, 3, 8, 21])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_float32_accuracy_near_teacher(delta, k, temperature, cpu_isa):
    """float32 (the centred form) within 1e-5 (loss) / 1e-4 (grads) of float64 as the KL shrinks like δ².

    float64 runs on the same float32 values: rounding the inputs alone moves the KL by 1e-5 at δ = 1e-4
    (measured), which no kernel can undo. (Measured kernel error: ~1e-7 down to δ = 1e-5.)
    """
    zs, zt = (x.float() for x in near_pair((2, k, 16, 16), (2, k, 16, 16), delta))
    loss64, g64 = grads(kd_logits_loss_reference, zs.double(), zt.double(), temperature)
    loss32, g32 = grads(kd_logits_loss, zs, zt, temperature)
    assert rel_err(loss32, loss64) < 1e-5
    for a, e in zip(g32, g64):
        assert rel_err(a, e) < 1e-4


@pytest.mark.parametrize("k", [2, 5])
@pytest.mark.parametrize("scale,temperature", [(30.0, 0.1), (10.0, 1.0)])
def test_float32_accuracy_far_from_teacher(k, scale, temperature, cpu_isa):
    """Confident teacher and student that disagree (maxima at different classes): float32 stays exact.

    Regression: w_k taken against the student's max lost 1e-7 of the offset between the two maxima
    (1.3 % of the teacher gradient at K = 2, logits ~100, T = 0.05).
    """
    g = torch.Generator().manual_seed(k)
    zs = (scale * torch.randn(2, k, 6, 6, generator=g, dtype=torch.float64)).float()
    zt = (scale * torch.randn(2, k, 6, 6, generator=g, dtype=torch.float64)).float()
    loss64, g64 = grads(kd_logits_loss_reference, zs.double(), zt.double(), temperature)
    loss32, g32 = grads(kd_logits_loss, zs, zt, temperature)
    assert rel_err(loss32, loss64) < 1e-5
    for a, e in zip(g32, g64):
        assert rel_err(a, e) < 1e-4


def test_float32_extreme_logits(cpu_isa):
    """Logits of ±1e4 at T = 0.05 in float32 (KL ~ 1e5 per pixel): finite, loss exact, no stray gradients."""
    zs, zt = logits(2, 4, 5, 5, scale=1e4, dtype=torch.float32)
    loss, (gs, gt) = grads(kd_logits_loss, zs, zt, 0.05)
    ref_loss, (ref_gs, ref_gt) = grads(kd_logits_loss_reference, zs.double(), zt.double(), 0.05)
    assert torch.isfinite(loss) and torch.isfinite(gs).all() and torch.isfinite(gt).all()
    assert rel_err(loss, ref_loss) < 1e-5 and rel_err(gs, ref_gs) < 1e-4
    assert float((gt.double() - ref_gt).abs().max()) < 1e-30  # the teacher is one-hot: its gradient is 0


@pytest.mark.parametrize("temperature", [1e-3, 1e3])
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 1e-6)])
def test_ends_of_the_temperature_range_against_50_digits(temperature, dtype, rtol):
    """At both ends of the accepted range [1e-3, 1e3] the loss matches the definition in 50-digit arithmetic
    (at τ = 1e30 float32 used to give 0 against an exact 0.61; such temperatures are now refused)."""
    zs, zt = (x.to(dtype) for x in logits(1, 3, 3, 3))
    rows = [(z[0].flatten(1).T.double() / temperature).tolist() for z in (zt, zs)]
    exact = float(temperature**2 * softmax_kl_mp(*rows) / 9)
    assert abs(float(kd_logits_loss(zs, zt, temperature)) - exact) <= rtol * exact


def test_loss_is_never_negative():
    for dtype in (torch.float32, torch.float64):
        zs = logits(2, 5, 3, 3, dtype=dtype)[0]
        assert float(kd_logits_loss(zs, zs.clone(), 2.0)) >= 0


def test_torch_compile_fullgraph():
    zs, zt = logits(2, 3, 5, 5, dtype=torch.float32)
    compiled = torch.compile(lambda a, b: kd_logits_loss(a, b, 2.0), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(zs, zt), kd_logits_loss(zs, zt, 2.0))


def test_torch_compile_backward_teacher_detached():
    zs, zt = logits(2, 3, 5, 5, dtype=torch.float32)
    compiled = torch.compile(
        lambda a, b: kd_logits_loss(a, b.detach(), 2.0), fullgraph=True, backend="aot_eager"
    )
    a, t = zs.clone().requires_grad_(), zt.clone().requires_grad_()
    compiled(a, t).backward()
    assert t.grad is None
    torch.testing.assert_close(a.grad, grads(kd_logits_loss, zs, zt, 2.0)[1][0])


BAD_INPUTS = [
    (lambda zs, zt: kd_logits_loss(zs[0], zt), ValueError, "zs must be 4-D"),
    (lambda zs, zt: kd_logits_loss(zs, zt[:1]), ValueError, "batch sizes differ"),
    (lambda zs, zt: kd_logits_loss(zs, zt[:, :2]), ValueError, "class counts 3 vs 2"),
    (lambda zs, zt: kd_logits_loss(zs, zt[..., :2]), ValueError, "same shape"),
    (lambda zs, zt: kd_logits_loss(zs.long(), zt.long()), TypeError, "floating-point"),
    (lambda zs, zt: kd_logits_loss(zs, zt.double()), TypeError, "same dtype"),
    (lambda zs, zt: kd_logits_loss(zs, zt, 0.0), ValueError, "temperature must be in [0.001, 1000], got 0"),
    (lambda zs, zt: kd_logits_loss(zs, zt, float("inf")), ValueError, "temperature must be in [0.001, 1000]"),
    (lambda zs, zt: kd_logits_loss(zs, zt, None), TypeError, "temperature must be a real number"),
    (lambda zs, zt: kd_logits_loss(zs, zt, True), TypeError, "temperature must be a real number, got bool"),
    (lambda zs, zt: kd_logits_loss(zs.bfloat16(), zt.bfloat16()), TypeError, "float32 and float64"),
]


@pytest.mark.parametrize("call,exc,message", BAD_INPUTS)
def test_bad_input(call, exc, message):
    assert_bad_input("kd_logits_loss", call, logits(2, 3, 4, 4, dtype=torch.float32), exc, message)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["zs", "zt"])
def test_non_finite_input(value, which):
    inputs = dict(zip(("zs", "zt"), logits(2, 3, 4, 4, dtype=torch.float32)))
    inputs[which][1, 0, 2, 3] = value
    non_finite_result(kd_logits_loss, "kd_logits_loss", inputs, which)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_cuda_matches_float64_reference(dtype, tol):
    assert_cuda_matches_float64(kd_logits_loss, kd_logits_loss_reference, logits(2, 4, 17, 16), dtype, tol)


@pytest.mark.cuda
def test_cuda_opcheck():
    zs, zt = logits(2, 3, 5, 4)
    torch.library.opcheck(
        torch.ops.relkd.kd_logits_loss.default, (zs.cuda().requires_grad_(), zt.cuda(), 2.0, True)
    )


@pytest.mark.cuda
@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
def test_cuda_only_the_gradients_asked_for(wants):
    zs, zt = logits(2, 4, 17, 16)
    args = [x.cuda().float().requires_grad_(w) for x, w in zip((zs, zt), wants)]
    ref = [x.requires_grad_(w) for x, w in zip((zs, zt), wants)]
    got = torch.autograd.grad(kd_logits_loss(*args, 2.0), [a for a in args if a.requires_grad])
    want = torch.autograd.grad(kd_logits_loss_reference(*ref, 2.0), [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert rel_err(a.cpu(), e) < 1e-5
    out = torch.ops.relkd.kd_logits_loss_backward(
        torch.tensor(1.0, device="cuda"), args[0].detach(), args[1].detach(), 2.0, list(wants)
    )
    assert [o is not None for o in out] == list(wants)
