#!/usr/bin/env bash
# On a GPU machine lent by the device tool (run there from the repository root, with .whl
# carried; see scripts/fetch_gpu_wheels.sh): install the carried wheels, point the OpenCL ICD
# loader at the NVIDIA driver, list the devices, run the exactness tests on the GPU, then the
# GPU bench profile. Results go to $OUT (gpu_bench.json, gpu_tests.log, devices.txt).
set -uo pipefail
out="${OUT:-/tmp/out}"; mkdir -p "$out"
if [[ -z "${SKIP_WHEELS:-}" ]]; then   # SKIP_WHEELS=1: a dry run where they are installed
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
# pyopencl's own ICD loader reads the vendor files of $OCL_ICD_VENDORS.
vendors=/tmp/icd; mkdir -p "$vendors"
library=$(ls /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 2>/dev/null | head -1)
echo "${library:-libnvidia-opencl.so.1}" > "$vendors/nvidia.icd"
export OCL_ICD_VENDORS="$vendors" LD_LIBRARY_PATH="/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
{ nvidia-smi -L; find /usr/local/nvidia /usr/lib -name "libnvidia-opencl*" 2>/dev/null;
  python3 -m streamer devices; } > "$out/devices.txt" 2>&1
cat "$out/devices.txt"
export STREAMER_DEVICE="${STREAMER_DEVICE:-gpu}" STREAMER_CACHE_DIR=/tmp/streamer-cache
timeout 240 python3 -m pytest -q -p no:cacheprovider -x \
  tests/restoration/test_median.py tests/restoration/test_convolution.py \
  tests/restoration/test_richardson_lucy.py tests/restoration/test_damped_rl.py \
  tests/restoration/test_device_path.py 2>&1 | tee "$out/gpu_tests.log" | tail -5
timeout 240 python3 -m streamer bench --profile gpu --json ${BENCH_ARGS:-} > "$out/gpu_bench.json" 2> "$out/gpu_bench.err"
cat "$out/gpu_bench.json"; tail -3 "$out/gpu_bench.err"
