#!/usr/bin/env bash
# The first thing to run on a machine with an NVIDIA GPU: everything deghost could not test without one.
#
#   pip install -e ".[dev,gpu,tensorrt]"
#   pip uninstall -y onnxruntime onnxruntime-gpu && pip install "onnxruntime-gpu>=1.19"
#   scripts/gpu_first_run.sh [OUT_DIR]      default OUT_DIR: gpu_first_run/
#
# The second line matters: onnxruntime is a core dependency, so the gpu extra installs onnxruntime-gpu
# beside it, and the two write the same module over each other; the onnxruntime step below checks it.
#
# Steps (each runs even when an earlier one failed; the summary says which passed):
#   1. the GPU/TensorRT probe (deghost.runtime.gpu_platform): driver, cuda-python, TensorRT
#   2. ONNX Runtime: onnxruntime-gpu alone, with its CUDA provider (else the command that fixes it)
#   3. python -m pytest -m "gpu or tensorrt"   (every GPU and TensorRT test; none may be skipped)
#   4. a TensorRT build of the paper preset (untrained weights, FP16 engines, --require-tensorrt)
#   5. the 1000-image benchmark on those engines (deghost bench --preset ffhq1024 --images 1000)
# Logs: OUT_DIR/<step>.log. Exit status: the number of failed steps.
# DRY_RUN=1 prints the commands instead of running them.
set -u
OUT="${1:-gpu_first_run}"
PYTHON="${PYTHON:-python}"
mkdir -p "$OUT"
declare -a NAMES RESULTS
failed=0

step() {  # step NAME COMMAND...
    local name="$1"; shift
    if [[ "${DRY_RUN:-0}" == 1 ]]; then echo "$name: $*"; return; fi
    echo "== $name: $*"
    local start=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local code=$?
    if [[ $name == pytest ]] && [[ $code == 0 ]] && grep -q "skipped" "$OUT/$name.log"; then
        code=99  # a GPU test that skipped here did not run: that is no pass on the GPU machine
    fi
    NAMES+=("$name"); RESULTS+=("$( [[ $code == 0 ]] && echo PASS || echo "FAIL (exit $code)" ) in $((SECONDS - start)) s")
    [[ $code == 0 ]] || failed=$((failed + 1))
    tail -n 3 "$OUT/$name.log"
}

step probe "$PYTHON" -c "from deghost.runtime.gpu_platform import platform; print(platform())"
step onnxruntime "$PYTHON" -c "import sys; from deghost.runtime.backends.onnxruntime import gpu_install_problem as p; \
problem = p(); print(problem or 'onnxruntime-gpu alone, with its CUDA provider'); sys.exit(1 if problem else 0)"
step pytest "$PYTHON" -m pytest -m "gpu or tensorrt" -rs -q
step build "$PYTHON" -m deghost.apps.cli build --random-init 0 --preset ffhq1024 --precision fp16 --require-tensorrt \
    --out "$OUT/engines"
step benchmark "$PYTHON" -m deghost.apps.cli bench --preset ffhq1024 --images 1000 --engines "$OUT/engines" \
    --results-dir "$OUT/benchmark"
[[ "${DRY_RUN:-0}" == 1 ]] && exit 0

echo
echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
"$PYTHON" - <<'PY'
import platform
from importlib.metadata import PackageNotFoundError, version
print(f"python {platform.python_version()} on {platform.platform()}")
for dist in ("deghost", "tensorrt-cu12", "tensorrt", "cuda-python", "cuda-bindings", "onnxruntime-gpu", "onnxruntime", "torch"):
    try:
        print(f"{dist} {version(dist)}")
    except PackageNotFoundError:
        pass
PY
echo
echo "== summary (logs in $OUT/)"
for i in "${!NAMES[@]}"; do printf '%-12s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}"; done
exit "$failed"
