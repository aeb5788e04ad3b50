#!/usr/bin/env bash
# The first thing to run on a machine with an NVIDIA GPU: everything deghost could not test without one.
#
#   python -m deghost.runtime.cuda_stack      which extra this driver serves (cuda13: driver 580+, cuda12: 525-579)
#   pip install -e ".[dev,cuda13]"            or .[cuda12] (README, "GPU install")
#   pip uninstall -y onnxruntime onnxruntime-gpu && pip install "onnxruntime-gpu[cuda,cudnn]>=1.28,<2"
#                                             (cuda12: "onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27")
#   scripts/gpu_first_run.sh [OUT_DIR]        default OUT_DIR: gpu_first_run/
#
# The third line matters: onnxruntime is a core dependency, so the extra installs onnxruntime-gpu beside it,
# and the two write the same module over each other; the backends step below checks it.
#
# Steps (each runs even when an earlier one failed; each ends in one PASS/FAIL line):
#   1. probe: the driver's CUDA version, the extra that fits it, the CUDA major of every GPU package installed
#      (python -m deghost.runtime.cuda_stack). Without a GPU driver the script stops here, saying so.
#   2. backends: where each backend really runs: ONNX Runtime from a real session's providers, TensorRT and
#      cuda-python from the GPU probe, PyTorch from torch.cuda (python -m deghost.apps.first_run backends)
#   3. pytest -m "gpu or tensorrt" with a junit XML (pytest_run); the verdict comes from the XML (python -m deghost.apps.first_run
#      pytest): a GPU/TensorRT test that skips here FAILS with its reason; modules skipped at collection
#      (ray, gradio missing in a GPU install) are listed, not failed
#   4. build: the paper preset's FP16 TensorRT engines (untrained weights, --require-tensorrt)
#   5. benchmark: the 1000-image comparison on those engines (each timing after a warm-up at its batch size)
# Logs: OUT_DIR/<step>.log; OUT_DIR/summary.md collects the machine, the probe and the verdicts, to paste into
# a note. Exit status: the number of failed steps. DRY_RUN=1 prints the steps' commands instead of running them.
set -u
OUT="${1:-gpu_first_run}"
PYTHON="${PYTHON:-python}"
SUMMARY="$OUT/summary.md"
declare -a VERDICTS
failed=0

step() {  # step NAME COMMAND... : runs COMMAND, logs it, records "NAME: PASS|FAIL ..." from its exit status
    local name="$1"; shift
    if [[ "${DRY_RUN:-0}" == 1 ]]; then echo "$name: $*"; return 0; fi
    echo "== $name: $*"
    local start=$SECONDS
    "$@" >"$OUT/$name.log" 2>&1
    local code=$?
    local verdict
    if [[ $code == 0 ]]; then verdict="PASS"; else verdict="FAIL (exit $code)"; failed=$((failed + 1)); fi
    VERDICTS+=("$name: $verdict in $((SECONDS - start)) s")
    tail -n 4 "$OUT/$name.log"
    return "$code"
}

run_only() {  # run_only NAME COMMAND... : runs and logs COMMAND; a later step judges its output
    local name="$1"; shift
    if [[ "${DRY_RUN:-0}" == 1 ]]; then echo "$name: $*"; return 0; fi
    echo "== $name: $*"
    "$@" >"$OUT/$name.log" 2>&1
    tail -n 2 "$OUT/$name.log"
}

[[ "${DRY_RUN:-0}" == 1 ]] || mkdir -p "$OUT"
step probe "$PYTHON" -m deghost.runtime.cuda_stack
if [[ $? == 3 ]]; then  # cuda_stack.EXIT_NO_GPU
    echo "no NVIDIA GPU driver on this machine: the first GPU run stops after the probe (nothing else can run here)"
    exit 0
fi
step backends "$PYTHON" -m deghost.apps.first_run backends
run_only pytest_run "$PYTHON" -m pytest -m "gpu or tensorrt" -rs -q --junitxml "$OUT/pytest.xml"
step pytest "$PYTHON" -m deghost.apps.first_run pytest "$OUT/pytest.xml"  # the verdict, from the junit XML
step build "$PYTHON" -m deghost.apps.cli build --random-init 0 --preset ffhq1024 --precision fp16 --require-tensorrt \
    --out "$OUT/engines"
step benchmark "$PYTHON" -m deghost.apps.cli bench --preset ffhq1024 --images 1000 --engines "$OUT/engines" \
    --results-dir "$OUT/benchmark"
[[ "${DRY_RUN:-0}" == 1 ]] && exit 0

{
    echo "# deghost first GPU run, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
    "$PYTHON" -c "import platform; print(f'python {platform.python_version()} on {platform.platform()}')"
    echo
    cat "$OUT/probe.log"
    echo
    cat "$OUT/backends.log"
    echo
    cat "$OUT/pytest.log"
    echo
    printf '%s\n' "${VERDICTS[@]}"
    echo '```'
} >"$SUMMARY"
echo
echo "== summary ($SUMMARY; logs in $OUT/)"
printf '%s\n' "${VERDICTS[@]}"
exit "$failed"
