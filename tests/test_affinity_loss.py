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
)
from hypothesis import given, settings
from hypothesis import strategies as st

from relkd_bench import ops
from relkd_bench.ops import affinity_loss, affinity_loss_reference

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")


def features(b, cs, ct, h, w, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, cs, h, w, generator=g, dtype=dtype), torch.randn(
        b, ct, h, w, generator=g, dtype=dtype
    )


# Which inputs require a gradient: distillation detaches the teacher ("student").
WANTS = {"student": (True, False), "teacher": (False, True), "both": (True, True)}


@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("cs,ct", [(3, 3), (4, 6)])
def test_opcheck(cs, ct, labeled):
    fs, ft = features(2, cs, ct, 5, 4)
    labels = torch.randint(0, 3, (2, 5, 4)) if labeled else None
    for wants in ((False, False), *WANTS.values()):
        args = (
            fs.requires_grad_(wants[0]),
            ft.requires_grad_(wants[1]),
            labels,
            3,
            0.5,
            2.0,
            1e-12,
            True,
        )
        torch.library.opcheck(torch.ops.relkd.affinity_loss.default, args)


@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("cs,ct", [(3, 3), (2, 5)])
def test_gradcheck_float64(cs, ct, labeled):
    fs, ft = features(2, cs, ct, 3, 4)
    labels = torch.randint(0, 2, (2, 3, 4)) if labeled else None
    fs.requires_grad_(), ft.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: affinity_loss(a, b, labels, 0.7, 1.6), (fs, ft))


@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("cs,ct", [(6, 6), (4, 7)], ids=["sum-diff", "dual"])
def test_only_the_gradients_asked_for(wants, dtype, tol, labeled, cs, ct):
    """An input that needs no gradient gets None; the other gradient is the reference's (float64)."""
    fs, ft = (x.to(dtype) for x in features(2, cs, ct, 7, 5))
    labels = torch.randint(0, 3, (2, 7, 5), generator=torch.Generator().manual_seed(1)) if labeled else None
    args = [x.clone().requires_grad_(w) for x, w in zip((fs, ft), wants)]
    ref = [x.double().requires_grad_(w) for x, w in zip((fs, ft), wants)]
    loss = affinity_loss(*args, labels, 0.7, 1.6)
    got = torch.autograd.grad(loss, [a for a in args if a.requires_grad])
    ref_loss = affinity_loss_reference(*ref, labels, 0.7, 1.6)
    want = torch.autograd.grad(ref_loss, [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert a.dtype == dtype and rel_err(a, e) < tol


@pytest.mark.parametrize("cs,ct", [(3, 3), (2, 5)])
def test_gradcheck_float64_teacher_detached(cs, ct):
    fs, ft = features(2, cs, ct, 3, 4)
    labels = torch.randint(0, 2, (2, 3, 4))
    assert torch.autograd.gradcheck(lambda a: affinity_loss(a, ft, labels, 0.7, 1.6), (fs.requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cs,ct", [(3, 3), (4, 6)], ids=["sum-diff", "dual"])
def test_backward_op_output_mask(dtype, cs, ct):
    """torch.ops.relkd.affinity_loss_backward returns None for a gradient its mask leaves out; the other is
    bit-identical to the unmasked call's."""
    fs, ft = features(2, cs, ct, 5, 4, dtype=dtype)
    labels = torch.randint(0, 3, (2, 5, 4))
    saved = torch.ops.relkd.affinity_loss(fs, ft, labels, 3, 0.5, 2.0, 1e-12, True)[1:]
    grad = torch.tensor(0.7, dtype=dtype)

    def backward(mask):
        return torch.ops.relkd.affinity_loss_backward(grad, fs, ft, labels, *saved, 0.5, 2.0, 1e-12, mask)

    full = backward([True, True])
    for mask in ([True, False], [False, True], [False, False]):
        for got, expected, wanted in zip(backward(mask), full, mask, strict=True):
            if wanted:
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
            else:
                assert got is None


@pytest.mark.parametrize("b", [1, 2, 4])
@pytest.mark.parametrize("cs,ct", [(1, 1), (3, 3), (16, 16), (64, 64), (3, 16), (64, 1)])
@pytest.mark.parametrize("h,w", [(1, 1), (7, 16), (16, 7), (33, 33)])
def test_matches_reference(b, cs, ct, h, w):
    fs, ft = features(b, cs, ct, h, w, seed=b * 100 + cs + ct)
    assert_matches(affinity_loss, affinity_loss_reference, fs, ft)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    cs=st.sampled_from([1, 3, 16, 64]),
    ct=st.sampled_from([1, 3, 16, 64]),
    h=st.sampled_from([1, 7, 16, 33]),
    w=st.sampled_from([1, 7, 16, 33]),
    classes=st.integers(1, 3),
    intra=st.floats(0.0, 3.0),
    inter=st.floats(0.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_hypothesis(b, cs, ct, h, w, classes, intra, inter, seed):
    fs, ft = features(b, cs, ct, h, w, seed=seed)
    labels = torch.randint(0, classes, (b, h, w), generator=torch.Generator().manual_seed(seed))
    assert_matches(affinity_loss, affinity_loss_reference, fs, ft, labels, intra, inter)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "strided"])
def test_layouts(layout):
    fs, ft = features(2, 8, 8, 7, 5)
    labels = torch.randint(0, 2, (2, 7, 5))
    expected = grads(affinity_loss_reference, fs, ft, labels)
    actual = grads(affinity_loss, layouts(fs)[layout], layouts(ft)[layout], labels)
    torch.testing.assert_close(actual, expected)


def test_zero_pixel_vectors():
    fs, ft = features(2, 4, 6, 5, 5)
    fs[0, :, 1, 2] = 0
    fs[1, :, 4, :] = 0
    ft[0, :, 0, 0] = 0
    labels = torch.randint(0, 2, (2, 5, 5))
    for lab in (None, labels):
        assert_matches(affinity_loss, affinity_loss_reference, fs, ft, lab)


@pytest.mark.parametrize(
    "make_labels",
    [
        lambda: torch.zeros(2, 6, 5, dtype=torch.long),  # one class: no inter pairs
        lambda: torch.randint(0, 2, (2, 6, 5)),
        lambda: torch.randint(0, 3, (2, 6, 5)),
        lambda: torch.randint(0, 2, (2, 6, 5)) * 2,  # class 1 absent
        lambda: torch.tensor([0, 1, 2]).repeat(10)[:30].reshape(1, 6, 5).repeat(2, 1, 1).roll(1, 0),
    ],
    ids=["one-class", "two-classes", "three-classes", "absent-class", "patterned"],
)
@pytest.mark.parametrize("cs,ct", [(5, 5), (3, 7)])
def test_labels(make_labels, cs, ct):
    fs, ft = features(2, cs, ct, 6, 5)
    assert_matches(affinity_loss, affinity_loss_reference, fs, ft, make_labels(), 0.3, 1.7)


def test_label_dtypes_and_explicit_classes():
    fs, ft = features(2, 4, 4, 3, 3)
    labels = torch.randint(0, 2, (2, 3, 3))
    expected = affinity_loss_reference(fs, ft, labels)
    for dtype in (torch.uint8, torch.int32, torch.int64):
        torch.testing.assert_close(affinity_loss(fs, ft, labels.to(dtype)), expected)
    # A class that exists in the label set but in no pixel changes nothing.
    torch.testing.assert_close(affinity_loss(fs, ft, labels, num_classes=5), expected)


@pytest.mark.parametrize("delta", [1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("cs,ct,labeled", [(16, 16, False), (16, 16, True), (16, 24, False)])
def test_float32_accuracy_near_teacher(delta, cs, ct, labeled):
    """Student ≈ teacher (late training): float32 within 1e-5 (loss) / 1e-4 (grads) of float64."""
    fs, ft = near_pair((2, cs, 16, 16), (2, cs, 16, 16), delta, seed=cs)
    if ct != cs:  # a wider teacher whose extra channels are small: affinities still nearly equal
        ft = torch.cat([ft, delta * torch.randn(2, ct - cs, 16, 16, dtype=torch.float64)], dim=1)
    labels = torch.randint(0, 2, (2, 16, 16)) if labeled else None
    loss64, g64 = grads(affinity_loss_reference, fs, ft, labels)
    loss32, g32 = grads(affinity_loss, fs.float(), ft.float(), labels)
    assert rel_err(loss32, loss64) < 1e-5
    for a, e in zip(g32, g64):
        assert rel_err(a, e) < 1e-4


def test_plain_float32_dual_is_inaccurate_near_teacher():
    """The regime above is real: the obvious float32 Gram-dual loses several digits there."""
    fs, ft = near_pair((2, 16, 16, 16), (2, 16, 16, 16), 1e-3)
    exact = affinity_loss_reference(fs, ft)
    assert rel_err(ops.affinity_loss_dual(fs.float(), ft.float()), exact) > 1e-4


def test_memory_is_not_quadratic():
    """N = 16384 pixels: an N×N float32 affinity would be 1 GiB per sample; the op needs O(N·C)."""
    from relkd_bench.bench import peak_extra_mb

    fs, ft = features(1, 8, 8, 128, 128, dtype=torch.float32)
    fs.requires_grad_(), ft.requires_grad_()

    def run():
        torch.autograd.grad(affinity_loss(fs, ft), (fs, ft))

    assert peak_extra_mb(run, torch.device("cpu")) < 16  # gradients 1 MiB, work buffers per chunk


def test_torch_compile_fullgraph():
    fs, ft = features(2, 4, 6, 5, 5, dtype=torch.float32)
    labels = torch.randint(0, 2, (2, 5, 5))

    def f(a, b):
        return affinity_loss(a, b) + affinity_loss(a, b, labels, 0.5, 2.0, num_classes=2)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(fs, ft), f(fs, ft))


def test_torch_compile_backward_teacher_detached():
    fs, ft = features(2, 4, 6, 5, 5, dtype=torch.float32)
    labels = torch.randint(0, 2, (2, 5, 5))

    def f(a, b):
        return affinity_loss(a, b.detach(), labels, 0.5, 2.0, num_classes=2)

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, t = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    compiled(a, t).backward()
    assert t.grad is None
    torch.testing.assert_close(a.grad, grads(lambda x: f(x, ft), fs)[1][0])


BAD_INPUTS = [
    (lambda fs, ft: affinity_loss(fs[0], ft), ValueError, "fs must be 4-D"),
    (lambda fs, ft: affinity_loss(fs, ft[:1]), ValueError, "batch sizes differ"),
    (lambda fs, ft: affinity_loss(fs, ft[..., :2]), ValueError, "spatial sizes differ"),
    (lambda fs, ft: affinity_loss(fs.long(), ft), TypeError, "floating-point"),
    (lambda fs, ft: affinity_loss(fs, ft.double()), TypeError, "same dtype"),
    (lambda fs, ft: affinity_loss(fs, ft, torch.zeros(2, 3, 3)), TypeError, "integer"),
    (
        lambda fs, ft: affinity_loss(fs, ft, torch.zeros(2, 3, 4, dtype=torch.long)),
        ValueError,
        "shape [B, H, W]",
    ),
    (
        lambda fs, ft: affinity_loss(fs, ft, -torch.ones(2, 3, 3, dtype=torch.long)),
        ValueError,
        "non-negative",
    ),
    (
        lambda fs, ft: affinity_loss(fs, ft, torch.ones(2, 3, 3, dtype=torch.long), num_classes=1),
        ValueError,
        "< num",
    ),
    (lambda fs, ft: affinity_loss(fs, ft, eps=0.0), ValueError, "eps"),
    (lambda fs, ft: affinity_loss(fs.half(), ft.half()), TypeError, "float32 and float64"),
]


@pytest.mark.parametrize("call,exc,message", BAD_INPUTS)
def test_bad_input(call, exc, message):
    assert_bad_input("affinity_loss", call, features(2, 3, 4, 3, 3, dtype=torch.float32), exc, message)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("which", ["fs", "ft"])
def test_non_finite_input(value, which):
    inputs = dict(zip(("fs", "ft"), features(2, 3, 4, 3, 3, dtype=torch.float32)))
    inputs[which][1, 2, 0, 1] = value
    assert not torch.isfinite(non_finite_result(affinity_loss, "affinity_loss", inputs, which))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("ct", [4, 6])
def test_all_zero_map_gets_the_exact_zero_gradient(dtype, labeled, ct):
    """An all-zero student map has X̂s = 0, so the definition's gradient for it is exactly 0 (every term
    carries X̂s); the sum/diff form left a rounding residue that the 1/eps chain rule made −931."""
    fs, ft = features(2, 4, ct, 5, 5, dtype=dtype)
    fs[0] = 0
    labels = torch.randint(0, 3, (2, 5, 5)) if labeled else None
    _, (gs, gt) = grads(affinity_loss, fs, ft, labels)
    _, (ref_gs, ref_gt) = grads(affinity_loss_reference, fs.double(), ft.double(), labels)
    assert float(gs[0].abs().max()) == 0.0 == float(ref_gs[0].abs().max())
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert rel_err(gt, ref_gt) < tol and rel_err(gs[1], ref_gs[1]) < tol


def test_loss_is_never_negative():
    """Sums of squares: one-pixel maps (where the Gram identity used to leave −1e-8) and identical inputs."""
    g = torch.Generator().manual_seed(0)
    for shape_s, shape_t in [((1, 3, 1, 1), (1, 5, 1, 1)), ((2, 4, 3, 3), (2, 4, 3, 3))]:
        for _ in range(20):
            fs = torch.randn(shape_s, generator=g)
            ft = fs.clone() if shape_s == shape_t else torch.randn(shape_t, generator=g)
            assert float(affinity_loss(fs, ft)) >= 0
            assert float(affinity_loss(fs, ft, torch.zeros(shape_s[0], *shape_s[2:], dtype=torch.long))) >= 0


def test_raw_op_rejects_bad_labels_without_crashing():
    fs, ft = features(2, 3, 3, 3, 3)
    with pytest.raises(ValueError, match="labels must be < num_classes"):
        torch.ops.relkd.affinity_loss(fs, ft, torch.full((2, 3, 3), 7), 2, 1.0, 1.0, 1e-12, True)
    with pytest.raises(TypeError, match="int64"):
        torch.ops.relkd.affinity_loss(
            fs, ft, torch.zeros(2, 3, 3, dtype=torch.int32), 2, 1.0, 1.0, 1e-12, True
        )


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("labeled", [False, True])
@pytest.mark.parametrize("cs,ct", [(16, 16), (8, 32)])
def test_cuda_matches_float64_reference(dtype, tol, labeled, cs, ct):
    labels = torch.randint(0, 3, (2, 17, 16)) if labeled else None
    lab = labels.cuda() if labeled else None
    floats = features(2, cs, ct, 17, 16)
    assert_cuda_matches_float64(
        affinity_loss, affinity_loss_reference, floats, dtype, tol, (labels, 0.5, 1.5), (lab, 0.5, 1.5)
    )


@pytest.mark.cuda
def test_cuda_opcheck():
    fs, ft = features(2, 4, 6, 5, 4)
    labels = torch.randint(0, 3, (2, 5, 4)).cuda()
    args = (fs.cuda().requires_grad_(), ft.cuda().requires_grad_(), labels, 3, 0.5, 2.0, 1e-12, True)
    torch.library.opcheck(torch.ops.relkd.affinity_loss.default, args)


@pytest.mark.cuda
@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
@pytest.mark.parametrize("cs,ct", [(16, 16), (8, 32)], ids=["sum-diff", "dual"])
def test_cuda_only_the_gradients_asked_for(wants, cs, ct):
    fs, ft = features(2, cs, ct, 17, 16)
    labels = torch.randint(0, 3, (2, 17, 16))
    args = [x.cuda().float().requires_grad_(w) for x, w in zip((fs, ft), wants)]
    ref = [x.requires_grad_(w) for x, w in zip((fs, ft), wants)]
    loss = affinity_loss(*args, labels.cuda(), 0.5, 1.5)
    got = torch.autograd.grad(loss, [a for a in args if a.requires_grad])
    ref_loss = affinity_loss_reference(*ref, labels, 0.5, 1.5)
    want = torch.autograd.grad(ref_loss, [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert rel_err(a.cpu(), e) < 1e-4
