#!/usr/bin/env bash
# The wheels .ci/gpu_check.sh needs on the device tool's H200 image (Python 3.12, a CUDA torch, no MONAI
# or nibabel), fetched here into .whl/ (git-ignored: add "/.whl/" to .git/info/exclude). Name .whl in the
# device call's carry; gpu_check.sh installs what it finds there. Both are pure-Python wheels (~3 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl monai==1.6.1 nibabel==5.4.2
ls -l .whl
