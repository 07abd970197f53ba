#!/usr/bin/env bash
# Prepare this checkout to run: system packages (when root), a virtual environment in .venv
# and the project with its extras. Idempotent and quick when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.bootstrapped"
want="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# OpenCL headers and the ICD loader let pip build pyvkfft (the FFT convolution method).
# Two PoCL CPU devices: pip's (pyopencl[pocl]) and Debian's pocl-opencl-icd. pip's PoCL 3.0 is
# built on LLVM 14, which cannot target recent processors ("unknown target CPU 'generic'" on
# AMD Zen 5); Debian's ties each kernel library to a named CPU and works there. Device
# selection skips a device that cannot build a kernel, so either one serves.
apt_packages=(ocl-icd-opencl-dev opencl-headers g++ pocl-opencl-icd)
# Oclgrind simulates an OpenCL device and checks every access: the kernel tests run under it.
apt_packages+=(oclgrind)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# Java 17+ and Maven fetch and run the local Kafka broker (tests, demo).
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
# Headless Chromium looks at the quick-look page as a person would (its tests).
command -v chromium >/dev/null || missing+=(chromium)
# openssl makes the local broker's TLS certificate (the secured-cluster tests).
command -v openssl >/dev/null || missing+=(openssl)
# A real Prometheus (and promtool) for the observability tests.
command -v prometheus >/dev/null || missing+=(prometheus)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "not root: skipping ${missing[*]} (the fft convolution method may be unavailable)"
  fi
fi

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
log "installing streamer and its dependencies"
"$venv/bin/python" -m pip install -q -e ".[pocl,fftw,test,view]"
if ! "$venv/bin/python" -m pip install -q -e ".[fft]"; then
  log "pyvkfft did not build: the fft convolution method is unavailable (others work)"
fi
echo "$want" >"$stamp"
