"""Builds the relkd_bench._C extension from csrc/.

CPU kernels always. CUDA kernels when the installed torch is a CUDA build and CUDA_HOME is found (no GPU
is needed to compile); RELKD_CUDA=1 forces them on (and fails loudly if they cannot be built),
RELKD_CUDA=0 turns them off. TORCH_CUDA_ARCH_LIST is honoured by torch's build helpers.
"""

import glob
import os
from pathlib import Path

import torch
from setuptools import setup
from torch.utils import cpp_extension

ROOT = Path(__file__).parent


def want_cuda() -> bool:
    flag = os.environ.get("RELKD_CUDA", "").strip()
    if flag == "0":
        return False
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if flag == "1":
        if not available:
            raise RuntimeError(
                "RELKD_CUDA=1 but CUDA kernels cannot be built: "
                f"torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME}"
            )
        return True
    if flag:
        raise RuntimeError(f"RELKD_CUDA must be 0 or 1, got {flag!r}")
    return available


def cuda_include_dirs() -> list[str]:
    # The CUDA 13 wheels ship the runtime headers ATen's CUDA headers need in nvidia/cu13/include.
    dirs = []
    for site in {str(Path(torch.__file__).parents[1])}:
        dirs += glob.glob(os.path.join(site, "nvidia", "cu*", "include"))
        dirs += glob.glob(os.path.join(site, "nvidia", "*", "include"))
    return sorted(set(dirs))


def extension():
    sources = sorted(
        str(p.relative_to(ROOT))
        for p in [ROOT / "csrc/relkd.cpp", *ROOT.glob("csrc/common/*.cpp"), *ROOT.glob("csrc/cpu/*.cpp")]
    )
    # -fno-trapping-math lets GCC if-convert and vectorize the NaN-propagating selects of the pixel loops
    # (it changes no result). The C++ standard comes from torch (C++17 before 2.14, C++20 from 2.14).
    cxx = ["-O3", "-fno-trapping-math"]
    link = []
    # at::parallel_for is a header template: without OpenMP in this extension's own compile it runs every
    # kernel on one thread. torch's libgomp (same soname) is already loaded, so no second runtime appears.
    if torch._C.has_openmp:
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    extra = {"cxx": cxx}
    if want_cuda():
        sources += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("csrc/cuda/*.cu"))
        cxx.append("-DRELKD_WITH_CUDA")
        extra["nvcc"] = ["-O3", "-DRELKD_WITH_CUDA", "--expt-relaxed-constexpr"]
        return cpp_extension.CUDAExtension(
            "relkd_bench._C",
            sources,
            extra_compile_args=extra,
            extra_link_args=link,
            include_dirs=cuda_include_dirs(),
        )
    return cpp_extension.CppExtension(
        "relkd_bench._C", sources, extra_compile_args=extra, extra_link_args=link
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
