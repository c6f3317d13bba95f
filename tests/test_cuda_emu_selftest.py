"""The CPU emulation of the CUDA kernels (tests/cuda_emu/simt.h) reports the defects it claims to: without
this, a check that never fires (a sanitizer missing from the toolchain, a barrier check that is never
reached) would let every kernel test pass."""

import pytest
from emulator import build, run


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("emu_build")
    return {s: build("selftest_emu.cpp", s, out) for s in ("address", "thread")}


@pytest.mark.parametrize("sanitizer", ["address", "thread"])
def test_correct_kernel_passes(harness, sanitizer):
    run(harness[sanitizer], ["ok"])


@pytest.mark.parametrize(
    ("case", "sanitizer", "report"),
    [
        ("race", "thread", "ThreadSanitizer: data race"),
        ("bounds", "address", "AddressSanitizer: heap-buffer-overflow"),
        ("return", "address", r"simt: .*returned"),
        ("divergent", "address", "simt: threads wait at different barriers"),
    ],
)
def test_defect_is_reported(harness, case, sanitizer, report):
    with pytest.raises(AssertionError, match=report):
        run(harness[sanitizer], [case])
