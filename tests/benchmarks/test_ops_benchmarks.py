"""pytest-benchmark suite of the relkd ops (``pytest tests/benchmarks --benchmark-only``).

Groups are "<op> <shape> <mode>" (modes fwd, fwd+bwd, distill: student grad only); providers: native,
reference (eager), compiled (torch.compile of the reference), dual (plain-PyTorch Gram-dual affinity),
gemm and copy (rooflines). Peak extra memory through the torch allocator goes to extra_info. The same
cases, with ratios against eager, go to one CSV through
``python -m relkd_bench.bench --out results/benchmarks``.
"""

import pytest
import torch

from relkd_bench.bench import MODES, cases, make_runner, peak_extra_mb

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
PARAMS = [
    pytest.param(case, provider, mode, id=f"{case.op}[{case.shape}]-{mode}-{provider}")
    for case in cases()
    for mode in MODES
    for provider in case.providers
]


@pytest.mark.parametrize("case,provider,mode", PARAMS)
def test_ops(benchmark, case, provider, mode):
    run = make_runner(case, provider, mode, DEVICE)
    run()  # warm-up (and compilation for the compiled provider)
    benchmark.group = f"{case.op} {case.shape} {mode}"
    benchmark.extra_info.update(
        provider=provider, device=str(DEVICE), peak_extra_mb=peak_extra_mb(run, DEVICE)
    )
    if case.gemm_flops:
        benchmark.extra_info["flops"] = case.flops(mode)
    if case.pairs:
        benchmark.extra_info["pixel_pairs"] = case.pairs
    if DEVICE.type == "cuda":
        benchmark.pedantic(lambda: (run(), torch.cuda.synchronize()), rounds=5, warmup_rounds=1)
    else:
        benchmark.pedantic(run, rounds=5, warmup_rounds=0)
