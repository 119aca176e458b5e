#!/usr/bin/env bash
# GPU check: trainer and scorer on CUDA in bf16 and fp32; writes $OUT/gpu_check.json
# (or ./gpu-results/ when OUT is unset). A few minutes on one H100.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py "$OUT" --steps "${STEPS:-3000}" 2>&1 | tee "$OUT/gpu_check.log"
