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
from relkd_bench.ops import gram_loss, gram_loss_reference

pytestmark = pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")


def features(b, c, hs, ws, ht=None, wt=None, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(b, c, hs, ws, generator=g, dtype=dtype)
    return fs, torch.randn(b, c, ht or hs, wt or ws, generator=g, dtype=dtype)


# Which inputs require a gradient: distillation detaches the teacher ("student").
WANTS = {"student": (True, False), "teacher": (False, True), "both": (True, True)}


@pytest.mark.parametrize("same_size", [True, False])
def test_opcheck(same_size):
    fs, ft = features(2, 3, 5, 4, *((5, 4) if same_size else (3, 6)))
    for wants in ((False, False), *WANTS.values()):
        args = (fs.requires_grad_(wants[0]), ft.requires_grad_(wants[1]), True)
        torch.library.opcheck(torch.ops.relkd.gram_loss.default, args)


@pytest.mark.parametrize("same_size", [True, False])
def test_gradcheck_float64(same_size):
    fs, ft = features(2, 3, 4, 3, *((4, 3) if same_size else (2, 5)))
    assert torch.autograd.gradcheck(gram_loss, (fs.requires_grad_(), ft.requires_grad_()))


@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("same_size", [True, False])
def test_only_the_gradients_asked_for(wants, dtype, tol, same_size):
    """An input that needs no gradient gets None; the other gradient is the reference's (float64)."""
    fs, ft = (x.to(dtype) for x in features(2, 8, 7, 5, *((7, 5) if same_size else (3, 4))))
    args = [x.clone().requires_grad_(w) for x, w in zip((fs, ft), wants)]
    ref = [x.double().requires_grad_(w) for x, w in zip((fs, ft), wants)]
    got = torch.autograd.grad(gram_loss(*args), [a for a in args if a.requires_grad])
    want = torch.autograd.grad(gram_loss_reference(*ref), [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert a.dtype == dtype and rel_err(a, e) < tol


def test_gradcheck_float64_teacher_detached():
    fs, ft = features(2, 3, 4, 3, 2, 5)
    assert torch.autograd.gradcheck(lambda a: gram_loss(a, ft), (fs.requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backward_op_output_mask(dtype):
    """torch.ops.relkd.gram_loss_backward returns None for a gradient its mask leaves out; the other is
    bit-identical to the unmasked call's."""
    fs, ft = features(2, 3, 4, 4, 3, 5, dtype=dtype)
    grad, diff = torch.tensor(0.7, dtype=dtype), torch.ops.relkd.gram_loss(fs, ft, True)[1]
    full = torch.ops.relkd.gram_loss_backward(grad, fs, ft, diff, [True, True])
    for mask in ([True, False], [False, True], [False, False]):
        out = torch.ops.relkd.gram_loss_backward(grad, fs, ft, diff, mask)
        for got, expected, wanted in zip(out, full, mask, strict=True):
            if wanted:
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
            else:
                assert got is None


@pytest.mark.parametrize("b", [1, 2, 4])
@pytest.mark.parametrize("c", [1, 3, 16, 64])
@pytest.mark.parametrize("hs,ws,ht,wt", [(1, 1, 1, 1), (7, 16, 7, 16), (33, 33, 16, 16), (16, 7, 1, 33)])
def test_matches_reference(b, c, hs, ws, ht, wt):
    fs, ft = features(b, c, hs, ws, ht, wt, seed=b + c)
    assert_matches(gram_loss, gram_loss_reference, fs, ft)


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 4),
    c=st.sampled_from([1, 3, 16, 64]),
    sizes=st.lists(st.sampled_from([1, 7, 16, 33]), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_matches_reference_hypothesis(b, c, sizes, seed):
    assert_matches(gram_loss, gram_loss_reference, *features(b, c, *sizes, seed=seed))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "strided"])
def test_layouts(layout):
    fs, ft = features(2, 8, 7, 5)
    expected = grads(gram_loss_reference, fs, ft)
    torch.testing.assert_close(grads(gram_loss, layouts(fs)[layout], layouts(ft)[layout]), expected)


@pytest.mark.parametrize("delta", [1e-1, 1e-2, 1e-3])
def test_float32_accuracy_near_teacher(delta):
    fs, ft = near_pair((2, 32, 16, 16), (2, 32, 16, 16), delta)
    loss64, g64 = grads(gram_loss_reference, fs, ft)
    loss32, g32 = grads(gram_loss, fs.float(), ft.float())
    assert rel_err(loss32, loss64) < 1e-5
    for a, e in zip(g32, g64):
        assert rel_err(a, e) < 1e-4


def test_torch_compile_fullgraph():
    fs, ft = features(2, 4, 5, 5, 3, 3, dtype=torch.float32)
    compiled = torch.compile(lambda a, b: 2 * gram_loss(a, b), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(fs, ft), 2 * gram_loss(fs, ft))


def test_torch_compile_backward_teacher_detached():
    fs, ft = features(2, 4, 5, 5, dtype=torch.float32)
    compiled = torch.compile(lambda a, b: gram_loss(a, b.detach()), fullgraph=True, backend="aot_eager")
    a, t = fs.clone().requires_grad_(), ft.clone().requires_grad_()
    compiled(a, t).backward()
    assert t.grad is None
    torch.testing.assert_close(a.grad, grads(gram_loss, fs, ft)[1][0])


@pytest.mark.parametrize("b,c,n", [(1, 3, 1), (3, 5, 1000), (2, 300, 777), (5, 2, 70000)])
def test_forward_chunks(b, c, n):
    """The CPU forward takes P = Xs + Xt and E = Xs − Xt a chunk of pixels at a time: shapes whose pixels
    end inside a chunk, span several, or hold more samples than threads give the float64 definition."""
    g = torch.Generator().manual_seed(n)
    fs, ft = (torch.randn(b, c, 1, n, generator=g, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(gram_loss(fs, ft), gram_loss_reference(fs, ft), rtol=1e-12, atol=1e-15)


BAD_INPUTS = [
    (lambda fs, ft: gram_loss(fs[0], ft), ValueError, "fs must be 4-D"),
    (lambda fs, ft: gram_loss(fs, ft[None]), ValueError, "ft must be 4-D"),
    (lambda fs, ft: gram_loss(fs, ft[:1]), ValueError, "batch sizes differ"),
    (lambda fs, ft: gram_loss(fs, ft[:, :2]), ValueError, "channel counts differ"),
    (lambda fs, ft: gram_loss(fs.int(), ft.int()), TypeError, "floating-point"),
    (lambda fs, ft: gram_loss(fs, ft.double()), TypeError, "same dtype"),
    (lambda fs, ft: gram_loss(fs[:, :, :0], ft), ValueError, "empty"),
    (lambda fs, ft: gram_loss(fs.half(), ft.half()), TypeError, "float32 and float64"),
    (lambda fs, ft: gram_loss(fs, ft.to("meta")), ValueError, "same device"),
]


@pytest.mark.parametrize("call,exc,message", BAD_INPUTS)
def test_bad_input(call, exc, message):
    assert_bad_input("gram_loss", call, features(2, 3, 4, 4, dtype=torch.float32), exc, message)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("which", ["fs", "ft"])
def test_non_finite_input(value, which):
    inputs = dict(zip(("fs", "ft"), features(2, 3, 4, 4, dtype=torch.float32)))
    inputs[which][0, 1, 2, 3] = value
    assert not torch.isfinite(non_finite_result(gram_loss, "gram_loss", inputs, which))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_cuda_matches_float64_reference(dtype, tol):
    assert_cuda_matches_float64(gram_loss, gram_loss_reference, features(2, 16, 17, 16, 9, 8), dtype, tol)


@pytest.mark.cuda
def test_cuda_opcheck():
    fs, ft = features(2, 4, 5, 4)
    torch.library.opcheck(torch.ops.relkd.gram_loss.default, (fs.cuda().requires_grad_(), ft.cuda(), True))


@pytest.mark.cuda
@pytest.mark.parametrize("wants", WANTS.values(), ids=list(WANTS))
def test_cuda_only_the_gradients_asked_for(wants):
    fs, ft = features(2, 16, 17, 16, 9, 8)
    args = [x.cuda().float().requires_grad_(w) for x, w in zip((fs, ft), wants)]
    ref = [x.requires_grad_(w) for x, w in zip((fs, ft), wants)]
    got = torch.autograd.grad(gram_loss(*args), [a for a in args if a.requires_grad])
    want = torch.autograd.grad(gram_loss_reference(*ref), [a for a in ref if a.requires_grad])
    for a, e in zip(got, want, strict=True):
        assert rel_err(a.cpu(), e) < 1e-5
