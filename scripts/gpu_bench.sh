#!/usr/bin/env bash
# On a GPU machine lent by the device tool (run there from the repository root, with .whl
# carried; see scripts/fetch_gpu_wheels.sh): install the carried wheels, point the OpenCL ICD
# loader at the NVIDIA driver, list the devices, run the exactness tests on the GPU, then the
# GPU bench profile, then the worker budget (host stages on the machine's cores beside the
# GPU's device stage). Results go to $OUT (devices.txt, gpu_tests.log, gpu_bench.json,
# worker_bench.txt).
set -uo pipefail
out="${OUT:-/tmp/out}"; mkdir -p "$out"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh" || exit 1
{ nvidia-smi -L; nproc; grep -m1 "model name" /proc/cpuinfo; find /usr/local/nvidia /usr/lib -name "libnvidia-opencl*" 2>/dev/null;
  python3 -m streamer devices; } > "$out/devices.txt" 2>&1
cat "$out/devices.txt"
export STREAMER_DEVICE="${STREAMER_DEVICE:-gpu}" STREAMER_CACHE_DIR=/tmp/streamer-cache
timeout 130 python3 -m pytest -q -p no:cacheprovider --maxfail=10 \
  tests/restoration/test_median.py tests/restoration/test_convolution.py \
  tests/restoration/test_richardson_lucy.py tests/restoration/test_damped_rl.py \
  tests/restoration/test_device_path.py 2>&1 | tee "$out/gpu_tests.log" | tail -5
timeout 130 python3 -m streamer bench --profile gpu --json ${BENCH_ARGS:-} > "$out/gpu_bench.json" 2> "$out/gpu_bench.err"
cat "$out/gpu_bench.json"; tail -3 "$out/gpu_bench.err"
timeout 300 python3 -m streamer bench --profile worker ${WORKER_ARGS:-} > "$out/worker_bench.txt" \
  2> "$out/worker_bench.err"
cat "$out/worker_bench.txt"; tail -3 "$out/worker_bench.err"
