import pytest
import torch


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
