#!/usr/bin/env bash
# Sets up .venv at the project root with paperchat and its test tools. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python compiles llama.cpp here (7-20 min on 2 cores the first time; pip caches the
# wheel). Portable x86-64 flags: a native build can emit AMX instructions that VMs refuse (SIGILL).
if [ "$(uname -m)" = x86_64 ]; then
  export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
else
  export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"
fi
echo "installing paperchat into .venv (the first run compiles llama.cpp: 5-20 minutes)…"
# Every package at the version CI tested, hash-checked (requirements.lock: uv pip compile, see its header),
# then paperchat itself with the embedded model (local), the eval's plots (eval) and the test tools.
.venv/bin/python -m pip install --quiet --progress-bar off --require-hashes -r requirements.lock
.venv/bin/python -m pip install --quiet --progress-bar off --no-deps -e ".[local,eval,test]"
echo "done: .venv/bin/paperchat --help"
