#!/usr/bin/env bash
# The GPU protocol lives in scripts/gpu_protocol.sh; this name is kept because the developers'
# guide and ../shared/GPU.md call it here.
exec bash "$(dirname "$0")/../scripts/gpu_protocol.sh" "$@"
