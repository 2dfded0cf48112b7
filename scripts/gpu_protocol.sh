#!/usr/bin/env bash
# The GPU protocol, one command planned to end within 8 minutes (scripts/gpu_protocol.py says what
# each tier does, and docs/performance.md "On a GPU: the protocol" how to call it with the device tool):
#
#   bash scripts/gpu_protocol.sh              # on the GPU machine: results in $OUT (two files)
#   bash scripts/gpu_protocol.sh --dry-run    # every tier on the CPU, same archive and summary
#
# It uses the machine's own python3 and PyTorch (pip --no-deps). Pure-Python wheels the machine
# lacks travel in the git-ignored .whl folder (device README) and are installed to /tmp/site;
# onnxruntime-gpu unpacked to /tmp/ortgpu (../shared/GPU.md) is put on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d /tmp/ortgpu ]; then export PYTHONPATH="/tmp/ortgpu${PYTHONPATH:+:$PYTHONPATH}"; fi
exec python3 scripts/gpu_protocol.py "$@"
