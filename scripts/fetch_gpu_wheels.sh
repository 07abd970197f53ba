#!/usr/bin/env bash
# Fetch, on this machine, the wheels the GPU machine lacks (it has no network): Python 3.12,
# manylinux x86-64, into .whl/ (ignored by git; carried by the device tool). Its image already
# has numpy, scipy, pillow, prometheus-client, pyyaml, pytest and CuPy.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
mkdir -p .git/info
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
packages=(pyopencl pytools platformdirs siphash24 astropy pyerfa astropy-iers-data pydantic
          pydantic-core annotated-types typing-inspection pydantic-settings python-dotenv sep
          aiokafka async-timeout)
# pyvkfft publishes no binary wheel (it builds against the machine's OpenCL), so the GPU runs
# without the fft method: the direct and separable methods serve there.
rm -rf .whl && mkdir -p .whl
for package in "${packages[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl "$package"
done
du -sh .whl
