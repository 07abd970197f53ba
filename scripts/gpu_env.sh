# Sourced by the GPU scripts on a machine lent by the device tool: install the carried wheels
# (.whl, see fetch_gpu_wheels.sh) and point pyopencl's ICD loader at the NVIDIA driver.
if [[ -z "${SKIP_WHEELS:-}" ]]; then   # SKIP_WHEELS=1: a dry run where they are installed
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || return 1
fi
export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1
# pyopencl's own ICD loader reads the vendor files of $OCL_ICD_VENDORS.
vendors=/tmp/icd; mkdir -p "$vendors"
library=$(ls /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 2>/dev/null | head -1)
echo "${library:-libnvidia-opencl.so.1}" > "$vendors/nvidia.icd"
export OCL_ICD_VENDORS="$vendors" LD_LIBRARY_PATH="/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}"
