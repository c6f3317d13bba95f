#!/usr/bin/env bash
# The wheels .ci/gpu_check.sh needs on the device tool's H200 image (Python 3.12, a CUDA torch, pytest; no
# MONAI, nibabel or hypothesis, which the op tests import), fetched here into .whl/ (git-ignored: add
# "/.whl/" to .git/info/exclude). Name .whl in the device call's carry; gpu_check.sh installs what it finds
# there. About 6 MB: pure-Python wheels, hypothesis a cp312 manylinux one.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl monai==1.6.1 nibabel==5.4.2 \
  hypothesis==6.170.17 sortedcontainers==2.4.0
ls -l .whl
