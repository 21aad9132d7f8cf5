#!/usr/bin/env bash
# The many-core serving curve (benchmarks/serve_scaling.py; runbook: docs/gpu.md, "Many-core
# serving"): `serve` pinned to 2, 4, 8, 16 cores, --workers auto against --workers 1 --threads N,
# at concurrency 64 and 1, real weights.
#
#   benchmarks/serve_scaling.sh --offline CARRY_DIR [-- serve_scaling.py args]
#       an offline host: its own python3 with numpy, tokenizers and onnxruntime; the export and the
#       server's wheels from CARRY_DIR (python -m benchmarks.scaling_bundle build)
#   benchmarks/serve_scaling.sh -- --model out/minilm --variant int8 [args]
#       this Python already has the [server] extra
#
# Results: benchmarks/results/<model>/<cpu class>/serve_scaling.{json,md}; with $OUT set, also
# $OUT/ (rewritten after every point) and the log. $SCALING_BUDGET_S (default 360) caps the run.
# Exit status: 0 measured, 1 a point failed, 2 it could not start (what is missing is said).
#
# --offline installs nothing from any index: pip runs with --no-index (and PIP_NO_INDEX=1), only
# to unpack the carried wheels into $SCALING_SITE (default /tmp/scaling-site, made afresh), which
# goes first on PYTHONPATH, then this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CARRY=""
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --offline)
      [ $# -ge 2 ] || { echo "serve_scaling.sh: error: --offline needs the carry folder" >&2; exit 2; }
      CARRY=$2
      shift 2
      ;;
    --) shift; ARGS+=("$@"); break ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
die() { echo "serve_scaling.sh: error: $*" >&2; exit 2; }
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/serve_scaling.log") 2>&1
fi
command -v "$PY" >/dev/null || die "no '$PY' here (set PYTHON to the host's python3)"
export PYTHONUNBUFFERED=1
t0=$(date +%s)

if [ -n "$CARRY" ]; then
  export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS
  [ -f "$CARRY/carry.json" ] || die "no scaling bundle at '$CARRY' (its carry.json is missing).
  Build it on a machine with network: python -m benchmarks.scaling_bundle build --from EXPORT (docs/gpu.md)"
  SITE=${SCALING_SITE:-/tmp/scaling-site}
  MODEL=${SCALING_MODEL:-/tmp/scaling-model}
  "$PY" benchmarks/scaling_bundle.py unpack "$CARRY" "$MODEL" >/dev/null || die "the bundle in '$CARRY' did not verify (see above)"
  rm -rf "$SITE"
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --quiet --target "$SITE" "$CARRY"/wheels/*.whl || die "pip could not install the wheels into $SITE"
  else
    echo "no pip for $PY: unzipping the wheels into $SITE"
    "$PY" benchmarks/scaling_bundle.py extract-wheels "$CARRY" "$SITE" >/dev/null || die "could not unzip the wheels"
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  read -r name variant < <("$PY" -c '
import json, sys
m = json.load(open(sys.argv[1]))["model"]
print(m["name"], m["variant"])' "$CARRY/carry.json")
  echo "model $name ($variant) unpacked into $MODEL; wheels in $SITE ($(( $(date +%s) - t0 )) s)"
  ARGS=(--model "$MODEL" --name "$name" --variant "$variant" "${ARGS[@]}")
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# preflight: every module the server and the benchmark import, and where each comes from
"$PY" - <<'PY' || exit 2
import importlib, sys
need = ["numpy", "tokenizers", "onnxruntime", "click", "starlette", "uvicorn", "prometheus_client",
        "anyio", "h11", "httptools", "uvloop", "dmeta_embed.serve.app"]
missing, found = [], []
for name in need:
    try:
        m = importlib.import_module(name)
    except Exception as e:  # an ImportError, or a wheel built for another Python
        missing.append(f"{name} ({type(e).__name__}: {e})")
    else:
        found.append(f"{name} {getattr(m, '__version__', '')} {getattr(m, '__file__', '')}")
print("python", sys.version.split()[0], sys.executable)
print("\n".join("  " + f for f in found))
if missing:
    print("serve_scaling.sh: error: missing: " + "; ".join(missing), file=sys.stderr)
    sys.exit(2)
PY
set +e
"$PY" -m benchmarks.serve_scaling --budget-s "${SCALING_BUDGET_S:-360}" "${ARGS[@]}"
rc=$?
echo "serve_scaling.sh: exit $rc after $(( $(date +%s) - t0 )) s"
[ -z "${OUT:-}" ] || sleep 1 # tee's last lines into $OUT/serve_scaling.log before the command returns
exit $rc
