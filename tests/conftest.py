import pytest
import torch
from helpers import CPU_ISAS, runnable_cpu_isas


def pytest_collection_modifyitems(config, items):
    from relkd_bench.ops import native_has_cuda

    if torch.cuda.is_available() and native_has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and relkd_bench._C built with CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_globals():
    """The engine sets threads and deterministic mode process-wide: each test module gets them back."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det, warn_only=warn)


@pytest.fixture(params=CPU_ISAS)
def cpu_isa(request, monkeypatch):
    """Each build of the CPU kernels (csrc/cpu/isa.h) this CPU runs, picked with RELKD_CPU_ISA; a build it
    lacks is skipped."""
    from relkd_bench.ops import native_available

    if not native_available():
        pytest.skip("relkd_bench._C is not built")
    if request.param not in runnable_cpu_isas():
        pytest.skip(f"this CPU lacks the {request.param} build's instructions")
    monkeypatch.setenv("RELKD_CPU_ISA", request.param)
    return request.param
