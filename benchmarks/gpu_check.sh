#!/usr/bin/env bash
# One short GPU job: install the gpu extra, export a Dmeta-shaped model, check fp16-on-CUDA parity
# against CPU fp32 (at full 1024-token length too) and print throughput and query latency.
#
#   benchmarks/gpu_check.sh                 # on any machine with an NVIDIA GPU and pip access
#   SKIP_INSTALL=1 benchmarks/gpu_check.sh  # the current python already has .[gpu,export]
#
# Writes a JSON report to ${OUT:-out}/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-out}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
if [ -z "${SKIP_INSTALL:-}" ]; then
  VENV=${VENV:-.venv-gpu}
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # CPU torch for the export only: the GPU work is onnxruntime's
  "$VENV/bin/python" -m pip install -q torch==2.13.0 || \
    "$VENV/bin/python" -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  # never beside the CPU `onnxruntime`: both provide the same module
  "$VENV/bin/python" -m pip install -q -e '.[export]' 'onnxruntime-gpu[cuda,cudnn]>=1.20'
  "$VENV/bin/python" -m pip uninstall -q -y onnxruntime 2>/dev/null || true
  PY="$VENV/bin/python"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -m benchmarks.gpu_check --work "$OUT_DIR/gpu-check" --report "$OUT_DIR/gpu_check.json"
