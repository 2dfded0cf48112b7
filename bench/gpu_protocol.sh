#!/usr/bin/env bash
# The GPU protocol: on a fresh machine with an NVIDIA GPU, this checkout and no network, build the
# package with its CUDA kernels, run the GPU tests (and compute-sanitizer on the kernel tests),
# export the cat2dog preset with random non-degenerate weights, and bench it at batch 1 and 8 on
# every usable backend; JSON, plot and logs go into one folder. Budget: 10 minutes on an H100.
#
#   bash bench/gpu_protocol.sh [OUT_DIR]          # OUT_DIR defaults to $OUT, else bench/results/gpu-<date>
#
# It uses the machine's own PyTorch (pip --no-deps). Pure-Python dependencies the machine may lack
# (tqdm, pytorch-msssim) are installed from ./.wheels when present: make it here with
#   pip download --no-deps -d .wheels tqdm==4.70.1 pytorch-msssim==1.0.0
# and carry it (it is git-ignored). onnxruntime-gpu, when unpacked to /tmp/ortgpu as
# ../shared/GPU.md describes, is put on PYTHONPATH so the ONNX Runtime CUDA backend is benched too.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/results/gpu-$(date -u +%Y%m%dT%H%M%SZ)}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
[ -d /tmp/ortgpu ] && export PYTHONPATH="/tmp/ortgpu${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$out/protocol.log"; }
step() {  # step NAME TIMEOUT_S COMMAND...: run with a time limit, log to $out/NAME.log, never abort the protocol
  local name=$1 limit=$2
  shift 2
  log "$name: $*"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  tail -n 5 "$out/$name.log" | sed 's/^/   /' | tee -a "$out/protocol.log"
  log "$name: exit $rc"
  return $rc
}

log "machine: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"
if [ -d .wheels ]; then
  python -m pip install -q --no-deps --no-index --find-links .wheels tqdm pytorch-msssim >>"$out/protocol.log" 2>&1
fi
CMAKE_ARGS="-DEGSDE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 ${CMAKE_ARGS:-}" \
  step build 300 python -m pip install -v --no-build-isolation --no-deps -e . || { log "build failed"; exit 1; }
python -c "import egsde_rt._core as c; print('built_with_cuda', c.built_with_cuda, '|', c.cuda_status())" \
  | tee -a "$out/protocol.log"

gpu_tests=(tests/test_native_cuda.py tests/test_reliability.py)  # the latter: device memory over 200 runs (needs onnxruntime for its engine)
step gpu-tests 180 python -m pytest -q -m gpu -rs "${gpu_tests[@]}"
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" 180 compute-sanitizer --tool "$tool" --error-exitcode 1 \
      python -m pytest -q -m gpu tests/test_native_cuda.py -k "philox or lowpass"
  done
fi
step kernels 120 egsde-rt bench --kernels --device cuda --json "$out/kernels-cuda.json"
# cat2dog, 256x256, random non-degenerate weights, exported here once (cached under $out/engine);
# compiled plans for this GPU (fp32), then every usable backend in fp32 and the bf16 ones.
step export-cat2dog 240 python -c "from egsde_rt.bench.engines import preset_engine; preset_engine('cat2dog', cache='$out/engine')"
step build-compiled 180 egsde-rt build "$out/engine" --backend compiled --device cuda --precision fp32 --max-batch 8
step bench-cat2dog 200 egsde-rt bench --engine "$out/engine" --device cuda --batch-size 1 8 --steps 20 \
  --repeats 3 --warmup 1 --json "$out/bench-cat2dog.json" --plot "$out/bench-cat2dog.png"
step bench-cat2dog-bf16 100 egsde-rt bench --engine "$out/engine" --device cuda --precision bf16 --batch-size 1 8 \
  --steps 20 --repeats 2 --warmup 1 --json "$out/bench-cat2dog-bf16.json"
rm -rf "$out/engine"  # ~1.2 GB: too big to bring back
log "done: $(ls "$out" | tr '\n' ' ')"
