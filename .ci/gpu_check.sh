#!/usr/bin/env bash
# The GPU checks, as one script for a machine with an NVIDIA GPU, nvcc and a CUDA build of torch (for this
# workplace: the device tool's H100/H200 image, where `python3` holds torch). CI has no GPU and never runs it.
#
#   bash .ci/gpu_check.sh [OUT_DIR]      # default $OUT, else results/gpu
#
# 1. builds relkd_bench._C in place with the CUDA kernels (RELKD_CUDA=1; arch from TORCH_CUDA_ARCH_LIST,
#    default 9.0 = H100/H200), 2. runs every op test (the cuda-marked ones included) against it,
# 3. writes the ops benchmark on the GPU (ops_cuda.csv: modes fwd, fwd+bwd and distill, with the GEMM and
# copy rooflines; again under fused/ with the experimental fused relation_kl_loss kernel), 4. the
# training-step benchmark of the quick and real presets (step_cuda.csv; needs MONAI and nibabel: on an
# image without them run `bash .ci/gpu_wheels.sh` here first and carry .whl/). Logs go to OUT_DIR as well.
# The tests cover both relation_kl CUDA paths.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-results/gpu}}
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 RELKD_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if compgen -G ".whl/*.whl" >/dev/null; then  # wheels carried for an image without them
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/gpu.txt"
"$py" setup.py -q build_ext --inplace 2>&1 | tail -n 20 | tee "$out/build.log"
"$py" -c "import torch, relkd_bench._C as c; assert c.with_cuda == 1; print('CUDA kernels built')"
set +e
"$py" -m pytest -q -p no:cacheprovider -rs tests/test_gram_loss.py tests/test_affinity_loss.py \
  tests/test_kd_logits_loss.py tests/test_relation_kl_loss.py tests/test_cwd_loss.py tests/test_backend.py 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
set -e
"$py" -m relkd_bench.bench --device cuda --skip compiled --out "$out" 2>&1 | tee "$out/bench.log"
# the experimental fused relation_kl_loss sweep (relation_kl_fused.cu), same suite
mkdir -p "$out/fused"
RELKD_RELATION_KL_CUDA=fused "$py" -m relkd_bench.bench --device cuda --skip compiled --out "$out/fused" 2>&1 |
  tee "$out/fused/bench.log"
if "$py" -c "import monai, nibabel" 2>/dev/null; then
  "$py" -m relkd_bench.bench --device cuda --only-step --step quick real --out "$out" 2>&1 | tee "$out/step.log"
else
  echo "training-step benchmark skipped: MONAI or nibabel missing (bash .ci/gpu_wheels.sh, carry .whl)" |
    tee "$out/step.log"
fi
exit "$tests"
