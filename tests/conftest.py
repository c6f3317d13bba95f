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
