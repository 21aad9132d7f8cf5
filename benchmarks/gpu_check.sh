#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py; runbook: docs/gpu.md): export the Dmeta-shaped model
# fp32 + fp16, prove the fp16 graph runs on CUDA, parity with fp32 at 16/256/1024 tokens, and speed
# (IO binding) beside torch fp16 on the same GPU.
#
#   benchmarks/gpu_check.sh                       # online: a venv with .[export] + onnxruntime-gpu from PyPI
#   benchmarks/gpu_check.sh --offline PARTS_DIR   # offline host: its own python3 and packages, and
#                                                 # onnxruntime-gpu from a folder of wheel parts
#   SKIP_INSTALL=1 benchmarks/gpu_check.sh        # this python already has onnxruntime-gpu + the export deps
#
# Arguments after `--` go to benchmarks/gpu_check.py. Results: benchmarks/results/dmeta-shaped/<gpu>/
# (gpu_check.json + gpu_check.md); with $OUT set, also $OUT/ (rewritten after every step) and the log.
#
# --offline installs nothing from any index: pip runs with --no-index (and PIP_NO_INDEX=1), only to
# unpack the reassembled, verified wheel into $ORT_GPU_SITE (default /tmp/ortgpu-site), which goes
# ahead of the host's CPU onnxruntime on PYTHONPATH. The host needs torch (CUDA), transformers, onnx,
# tokenizers and numpy already.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PARTS=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --offline)
      [ $# -ge 2 ] || { echo "gpu_check.sh: error: --offline needs the folder of wheel parts" >&2; exit 2; }
      PARTS=$2
      shift 2
      ;;
    --) shift; ARGS+=("$@"); break ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
die() { echo "gpu_check.sh: error: $*" >&2; exit 2; }
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/gpu_check.log") 2>&1
  ARGS=(--copy-to "$OUT" "${ARGS[@]}")
fi

if [ -n "$PARTS" ]; then
  # whatever pip's configuration says, nothing comes from an index or a link
  export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
  command -v "$PY" >/dev/null || die "no '$PY' here (set PYTHON to the host's python3)"
  [ -f "$PARTS/wheel-parts.json" ] || die "no wheel parts at '$PARTS' (its wheel-parts.json is missing).
  The offline mode installs nothing from the network: on a machine with network, download
  onnxruntime-gpu and split it (python3 scripts/wheel_parts.py split WHEEL DIR), then bring DIR here
  (docs/gpu.md, 'Running it')."
  missing=$("$PY" -c '
import importlib.util
need = ["torch", "transformers", "onnx", "tokenizers", "numpy"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))') || die "'$PY' does not run"
  [ -z "$missing" ] || die "'$PY' lacks $missing; the offline mode uses the host's own packages and installs none"
  WHEEL_DIR=${ORT_GPU_WHEEL_DIR:-/tmp/ortgpu-wheel}
  SITE=${ORT_GPU_SITE:-/tmp/ortgpu-site}
  wheel=$("$PY" scripts/wheel_parts.py join "$PARTS" "$WHEEL_DIR") || die "the wheel parts in '$PARTS' did not verify (see above)"
  echo "verified $wheel"
  "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --quiet --upgrade --target "$SITE" "$wheel" || die "pip could not install $wheel into $SITE"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  found=$("$PY" -c 'import onnxruntime as o; print(o.__file__)' 2>&1) || die "no onnxruntime importable from $SITE: $found"
  case "$(realpath "$found")" in
    "$(realpath "$SITE")"/*) echo "onnxruntime from $found" ;;
    *) die "onnxruntime is imported from $found, not from $SITE: is $wheel onnxruntime-gpu?" ;;
  esac
  # the nvidia-* wheels' libraries (CUDA 13, cuDNN 9) on the loader's path too; gpu_check.py imports
  # torch first, which loads the same ones
  libs=$("$PY" -c '
import importlib.util, pathlib
spec = importlib.util.find_spec("nvidia")
roots = list(spec.submodule_search_locations or []) if spec else []
print(":".join(sorted({str(p.parent) for r in roots for p in pathlib.Path(r).glob("**/lib/lib*.so*")})))')
  [ -z "$libs" ] || export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
elif [ -z "${SKIP_INSTALL:-}" ]; then
  VENV=${VENV:-.venv-gpu}
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # PyPI's Linux torch is the CUDA build, which the torch fp16 peer needs here (not the CPU pin
  # of the Makefile)
  "$VENV/bin/python" -m pip install -q torch==2.13.0
  # never beside the CPU `onnxruntime`: both provide the same module
  "$VENV/bin/python" -m pip install -q -e '.[export]' 'onnxruntime-gpu[cuda,cudnn]>=1.31'
  "$VENV/bin/python" -m pip uninstall -q -y onnxruntime 2>/dev/null || true
  PY="$VENV/bin/python"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
set +e
"$PY" -m benchmarks.gpu_check "${ARGS[@]}"
rc=$?
[ -z "${OUT:-}" ] || sleep 1 # tee's last lines into $OUT/gpu_check.log before the command returns
exit $rc
