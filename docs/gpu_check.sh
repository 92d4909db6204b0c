#!/usr/bin/env bash
# Prove the TensorRT target on a machine with an NVIDIA GPU and network access (docs/gpu-check.md).
# Run from the repository root: docs/gpu_check.sh [OUT_DIR]. Exit 0 only if every step passed.
set -uo pipefail

OUT=${1:-out/gpu-check}
PY=${PYTHON:-python3}
MODEL=examples/tiny_cnn.onnx
SHAPES=(--shape-range batch=1:4:8)
failures=()

step() {  # step NAME COMMAND...: run it, say PASS/FAIL, remember failures
    local name=$1; shift
    echo "=== $name: $*"
    if "$@"; then echo "PASS $name"; else echo "FAIL $name"; failures+=("$name"); fi
}

mkdir -p "$OUT"
nvidia-smi || { echo "FAIL no NVIDIA driver (nvidia-smi)"; exit 1; }
cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)

# 1. Install. cuda-python 13 needs a CUDA 13 driver (>= 580); a CUDA 12 driver needs cuda-python 12.
install() {
    [ -d .venv ] || "$PY" -m venv .venv
    .venv/bin/pip install -q -e ".[tensorrt,dev]" || return 1
    if [ "${cuda_major:-13}" -lt 13 ]; then .venv/bin/pip install -q 'cuda-python>=12.6,<13' || return 1; fi
}
step install install
export PATH="$PWD/.venv/bin:$PATH"

# 2. The target is available and names the TensorRT version and GPU.
step targets bash -c 'infer-compile targets && python -c "
import sys
from infer_compile.targets import get_target
status = get_target(\"trt\").availability()
print(status.detail)
sys.exit(0 if status.available else 1)"'

# 3. Engines at every precision, with a profile and a shared timing cache (the second build reuses it).
build() {  # build PRECISION EXTRA...
    local precision=$1; shift
    local flag=(); [ "$precision" = fp32 ] || flag=("--$precision")
    infer-compile "$MODEL" --target trt "${flag[@]}" "${SHAPES[@]}" --timing-cache "$OUT/trt.cache" \
        -o "$OUT/$precision.engine" --no-cache "$@"
}
step build-fp32 build fp32
step build-fp16 build fp16
step build-int8 build int8 --calib synthetic --calib-samples 32
step timing-cache test -s "$OUT/trt.cache"

# 4. Numerics against onnxruntime on the source model, within each precision's tolerance (exit 3 if not).
for precision in fp32 fp16 int8; do
    step "verify-$precision" infer-compile verify "$MODEL" "$OUT/$precision.engine" --samples 16
done

# 5. Latency: fp16 and int8 against fp32, alternating runs (report; the ratio is not a pass criterion).
step bench-fp16 infer-compile bench "$OUT/fp16.engine" --vs "$OUT/fp32.engine" -b 1 -b 8
step bench-int8 infer-compile bench "$OUT/int8.engine" --vs "$OUT/fp32.engine" -b 1 -b 8

# 6. A deferred bundle, finalized here, gives an engine that verifies too.
step defer infer-compile "$MODEL" --target trt --int8 --calib synthetic --calib-samples 32 "${SHAPES[@]}" \
    --timing-cache "$OUT/trt.cache" -o "$OUT/bundle/model.engine" --defer --no-cache
step finalize infer-compile finalize "$OUT/bundle/model.trtbundle" --timing-cache "$OUT/trt.cache"
step verify-finalized infer-compile verify "$MODEL" "$OUT/bundle/model.engine" --samples 16

# 7. The trtexec line recorded for this TensorRT major version builds the same engine (trtexec ships with
#    the TensorRT tar/deb packages and NGC containers, not with the pip wheel). In a copy: it rewrites timing.cache.
run_trtexec() {
    command -v trtexec >/dev/null || { echo "trtexec is not on PATH: install TensorRT's tar/deb package"; return 1; }
    rm -rf "$OUT/trtexec" && cp -r "$OUT/bundle/model.trtbundle" "$OUT/trtexec"
    local line
    line=$(python -c "
import json, tensorrt
major = int(tensorrt.__version__.split('.')[0])
print(json.load(open('$OUT/trtexec/manifest.json'))['trtexec']['11' if major >= 11 else '10'])") || return 1
    (cd "$OUT/trtexec" && bash -c "$line" | tee trtexec.log) && grep -q "PASSED TensorRT.trtexec" "$OUT/trtexec/trtexec.log" \
        && test -s "$OUT/trtexec/model.engine"
}
step trtexec run_trtexec

# 8. The GPU tests: all run, none skipped.
step pytest-gpu bash -c 'python -m pytest -m gpu tests/test_target_tensorrt.py -q -rs -p no:randomly | tee "$0/pytest.log" \
    && ! grep -q "SKIPPED" "$0/pytest.log"' "$OUT"

# 9. The fp16 engine as a Triton model: the repository loads unchanged and answers like the source. Needs the
#    in-process tritonserver package, which ships in NVIDIA's Triton containers (nvcr.io/nvidia/tritonserver).
serve_triton() {
    python -c "import tritonserver" 2>/dev/null || { echo "no tritonserver package: run inside a Triton container"; return 1; }
    rm -rf "$OUT/triton" && infer-compile triton "$OUT/fp16.engine" --repo "$OUT/triton" --name cnn || return 1
    python - "$OUT/triton" "$MODEL" <<'PY'
import sys
import numpy as np
import tritonserver
from infer_compile.core.ir import load_onnx
from infer_compile.core.numerics import TOLERANCES, compare_outputs, random_inputs, run_onnx, within
repo, model = sys.argv[1], load_onnx(sys.argv[2])
feeds = random_inputs(model.inputs, seed=0, dims={"batch": 2})
server = tritonserver.Server(model_repository=repo).start(wait_until_ready=True)
try:
    [response] = list(server.model("cnn").infer(inputs=feeds))
    served = {name: np.from_dlpack(tensor).astype(np.float32) for name, tensor in response.outputs.items()}
finally:
    server.stop()
sys.exit(0 if within(compare_outputs(run_onnx(model, feeds), served), TOLERANCES["fp16"]) else 1)
PY
    python -m pytest tests/test_triton.py -q -rs -p no:randomly
}
step triton serve_triton

echo
if [ ${#failures[@]} -eq 0 ]; then echo "gpu check: every step passed"; exit 0; fi
echo "gpu check: FAILED ${failures[*]}"
exit 1
