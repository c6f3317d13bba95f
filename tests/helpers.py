"""Shared helpers of the op tests."""

from __future__ import annotations

import importlib

import pytest
import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Norm-wise relative error ‖actual − expected‖ / ‖expected‖, in float64."""
    a, e = actual.detach().double(), expected.detach().double()
    return float((a - e).norm() / e.norm().clamp_min(1e-300))


def grads(loss_fn, *inputs: torch.Tensor, **kwargs) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Loss and gradients w.r.t. fresh leaf copies of the floating-point tensors in ``inputs``."""
    args = [
        x.detach().clone().requires_grad_(True)
        if isinstance(x, torch.Tensor) and x.is_floating_point()
        else x
        for x in inputs
    ]
    leaves = [x for x in args if isinstance(x, torch.Tensor) and x.requires_grad]
    loss = loss_fn(*args, **kwargs)
    return loss.detach(), torch.autograd.grad(loss, leaves)


def assert_matches(native_fn, reference_fn, *inputs: torch.Tensor, rtol: float = 1e-9, **kwargs) -> None:
    """Loss and gradients of the native op match the reference (float64 inputs: to ~rtol)."""
    loss, g = grads(native_fn, *inputs, **kwargs)
    ref_loss, ref_g = grads(reference_fn, *inputs, **kwargs)
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=1e-12)
    for a, e in zip(g, ref_g):
        assert rel_err(a, e) < 10 * rtol or float((a - e).norm()) < 1e-12, (rel_err(a, e), float(e.norm()))


def near_pair(shape_s, shape_t, delta: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 student features and a teacher perturbed by delta·noise (same shape)."""
    g = torch.Generator().manual_seed(seed)
    fs = torch.randn(shape_s, generator=g, dtype=torch.float64)
    return fs, fs + delta * torch.randn(shape_t, generator=g, dtype=torch.float64)


def layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values as contiguous, channels_last and a non-contiguous (sliced) view."""
    wide = torch.cat([x, torch.zeros_like(x)], dim=3)[..., : x.shape[3]]
    padded = torch.zeros(x.shape[0], x.shape[1], x.shape[2], 2 * x.shape[3], dtype=x.dtype)
    padded[..., ::2] = x
    return {
        "contiguous": x.contiguous(),
        "channels_last": x.contiguous(memory_format=torch.channels_last),
        "sliced": wide,
        "strided": padded[..., ::2],
    }


def assert_bad_input(op_name: str, call, inputs: tuple, exc: type[Exception], message: str) -> None:
    """call(*inputs) raises exc with a message naming the op and containing ``message``."""
    with pytest.raises(exc, match=op_name) as info:
        call(*inputs)
    assert message in str(info.value)


def non_finite_result(op, op_name: str, inputs: dict[str, torch.Tensor], which: str) -> torch.Tensor:
    """inputs[which] (already holding a NaN/Inf) makes op raise a ValueError naming the op and the input;
    returns op's result with check_finite=False (no check, no error)."""
    with pytest.raises(ValueError, match=f"{op_name}: {which} contains NaN or Inf"):
        op(*inputs.values())
    return op(*inputs.values(), check_finite=False)


def assert_cuda_matches_float64(native_fn, reference_fn, floats: tuple, dtype: torch.dtype, tol: float,
                                cpu_args: tuple = (), cuda_args: tuple = ()) -> None:
    """The CUDA op on ``floats`` cast to dtype matches the float64 reference: loss to tol, gradients (in
    dtype) to 10·tol, relative norm-wise."""
    loss64, g64 = grads(reference_fn, *floats, *cpu_args)
    loss, g = grads(native_fn, *(x.cuda().to(dtype) for x in floats), *cuda_args)
    assert rel_err(loss.cpu(), loss64) < tol
    for a, e in zip(g, g64):
        assert a.dtype == dtype and rel_err(a.cpu(), e) < 10 * tol


def softmax_kl_mp(rows_t: list[list], rows_s: list[list], dps: int = 50):
    """Σ_rows KL(softmax(t) ‖ softmax(s)) in mpmath at ``dps`` digits (logits given as Python floats or
    mpf): the exact value the extreme-temperature tests compare with."""
    import mpmath as mp

    with mp.workdps(dps):
        total = mp.mpf(0)
        for t, s in zip(rows_t, rows_s):
            lt = mp.log(mp.fsum(mp.e ** mp.mpf(x) for x in t))
            ls = mp.log(mp.fsum(mp.e ** mp.mpf(x) for x in s))
            terms = ((mp.mpf(a) - lt, mp.mpf(b) - ls) for a, b in zip(t, s))
            total += mp.fsum(mp.e**log_pt * (log_pt - log_ps) for log_pt, log_ps in terms)
        return total


#: Overrides of the quick preset for a seconds-long end-to-end run (synthetic 32 px, slim teacher, KD on).
TINY_RUN = {
    "data.synthetic.cases_per_site": 3, "data.synthetic.size": 32, "data.synthetic.slices": 6,
    "data.size": 32, "data.heldout": "UCL", "train.epochs": 2, "teacher.epochs": 1, "train.batch_size": 4,
    "train.max_steps_per_epoch": 2, "train.threads": 1, "train.device": "cpu",
    "teacher.kwargs.channels": [4, 8, 16, 32], "teacher.kwargs.strides": [2, 2, 2],
    "distill.lambda_logits": 1.0, "distill.lambda_km": 1.0, "distill.lambda_aa": 1.0,
}


CPU_ISAS = ("avx512", "avx2", "baseline")  # the builds of the CPU kernels (csrc/cpu/isa.h), widest first


def runnable_cpu_isas() -> tuple[str, ...]:
    """The builds this CPU runs: the widest it has (relkd_bench._C.cpu_kernels) and every narrower one."""
    native = importlib.import_module("relkd_bench._C")
    return CPU_ISAS[CPU_ISAS.index(native.cpu_kernels):]
