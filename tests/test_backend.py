import os
import subprocess
import sys

import pytest
import torch
from helpers import CPU_ISAS, runnable_cpu_isas

from relkd_bench import ops


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_reference_backend_forced_by_environment():
    out = run_python(
        "import torch; from relkd_bench import ops; x = torch.randn(1, 2, 3, 3);"
        "print(ops.backend(), float(ops.gram_loss(x, 2 * x)))",
        RELKD_BACKEND="reference",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("reference ")


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown backend"):
        ops.set_backend("fast")


@pytest.mark.skipif(not ops.native_available(), reason="relkd_bench._C is not built")
def test_backends_agree():
    fs, ft = torch.randn(2, 4, 5, 5, dtype=torch.float64), torch.randn(2, 6, 5, 5, dtype=torch.float64)
    try:
        ops.set_backend("reference")
        expected = ops.affinity_loss(fs, ft), ops.kd_logits_loss(fs, fs.flip(1))
        ops.set_backend("native")
        actual = ops.affinity_loss(fs, ft), ops.kd_logits_loss(fs, fs.flip(1))
    finally:
        ops.set_backend(None)
    torch.testing.assert_close(actual, expected)


def test_reference_backend_checks_inputs_too():
    fs = torch.randn(1, 2, 3, 3)
    try:
        ops.set_backend("reference")
        with pytest.raises(ValueError, match="gram_loss: ft contains NaN or Inf"):
            ops.gram_loss(fs, torch.full_like(fs, float("nan")))
        with pytest.raises(ValueError, match="affinity_loss: labels must be non-negative"):
            ops.affinity_loss(fs, fs, -torch.ones(1, 3, 3, dtype=torch.long))
    finally:
        ops.set_backend(None)


@pytest.mark.skipif(
    ops.native_has_cuda() or not torch.cuda.is_available(), reason="needs CUDA without CUDA kernels"
)
def test_cuda_tensors_without_cuda_kernels_are_an_error():
    x = torch.randn(1, 2, 3, 3, device="cuda")
    with pytest.raises(RuntimeError, match="built without CUDA kernels"):
        ops.gram_loss(x, x)


def test_cpu_kernels_are_built_with_openmp():
    """at::parallel_for is a header template: an extension built without OpenMP runs every CPU kernel on one
    thread (it did, unnoticed, until the build added -fopenmp)."""
    native = pytest.importorskip("relkd_bench._C")
    if not torch._C.has_openmp:
        pytest.skip("this torch is built without OpenMP")
    assert native.with_openmp == 1


needs_native = pytest.mark.skipif(ops.backend() != "native", reason="the native backend is not in use")


@needs_native
@pytest.mark.parametrize(
    "call",
    [
        lambda x: ops.kd_logits_loss(x, x),
        lambda x: ops.cwd_loss(x, x),
        lambda x: ops.relation_kl_loss(x, x),
    ],
    ids=["kd_logits_loss", "cwd_loss", "relation_kl_loss"],
)
def test_unknown_cpu_isa_is_an_error(call, monkeypatch):
    """RELKD_CPU_ISA names one build of the CPU kernels; anything else is an error, not a fallback."""
    monkeypatch.setenv("RELKD_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="RELKD_CPU_ISA must be one of auto, avx512, avx2, baseline"):
        call(torch.randn(1, 2, 3, 3))


LOSSES = (ops.kd_logits_loss, ops.cwd_loss, ops.relation_kl_loss)


@needs_native
def test_cpu_isa_builds_agree(monkeypatch):
    """Every wider build this CPU runs gives the baseline build's losses to float32 rounding (same formulas,
    other vector widths)."""
    wider = runnable_cpu_isas()[:-1]
    if not wider:
        pytest.skip("this CPU runs the baseline build only")
    x, y = torch.randn(2, 3, 9, 8), torch.randn(2, 3, 9, 8)
    monkeypatch.setenv("RELKD_CPU_ISA", "baseline")
    want = [float(op(x, y)) for op in LOSSES]
    for isa in wider:
        monkeypatch.setenv("RELKD_CPU_ISA", isa)
        assert [float(op(x, y)) for op in LOSSES] == pytest.approx(want, rel=1e-5), isa


@needs_native
def test_a_build_the_cpu_lacks_is_an_error(monkeypatch):
    lacking = [isa for isa in CPU_ISAS if isa not in runnable_cpu_isas()]
    if not lacking:
        pytest.skip("this CPU runs every build")
    for isa in lacking:
        monkeypatch.setenv("RELKD_CPU_ISA", isa)
        for op in LOSSES:
            with pytest.raises(ValueError, match=f"RELKD_CPU_ISA={isa} but this CPU lacks"):
                op(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3))


@needs_native
def test_cpu_kernels_names_the_build_the_ops_run(monkeypatch):
    monkeypatch.delenv("RELKD_CPU_ISA", raising=False)
    widest = ops.cpu_kernels()
    assert widest in CPU_ISAS
    monkeypatch.setenv("RELKD_CPU_ISA", "baseline")
    assert ops.cpu_kernels() == "baseline"
    monkeypatch.setenv("RELKD_CPU_ISA", "auto")
    assert ops.cpu_kernels() == widest
