#!/usr/bin/env bash
# GPU check, a few minutes on one H100 or H200; runs the CUDA tests (tests/test_gpu.py: a step
# replayed as a CUDA graph trains as the eager step, and resumes from a checkpoint), then writes
# JSON to $OUT (./gpu-results/ when OUT is unset):
#   gpu_check.json     host syncs in the hot loop, CUDA graph against eager, data-limited
#                      cells in bf16 and fp32, bits per parameter within a fixed budget
#                      (2 layers d 128, V 2048, S 64, N 4096), tokens/s, model FLOP
#                      utilisation, 1/2/8 packed models, torch.compile against eager,
#                      scoring / membership inference / extraction
#   trainer_vs_hf.json memcap's packed trainer (eager and as a CUDA graph) and scorer (5 seeds)
#                      against HF GPT2LMHeadModel one model at a time, d 16 … 64 (needs
#                      transformers)
#   stage_memory.json  host peak memory and time of every model stage of one paper-grid cell at
#                      N = 2^23 (V 2048, S 64, 5 seeds, L1-d32; scoring all 2.7e9 tokens is
#                      what a CPU cannot do), set SKIP_MEMORY=1 to leave it out
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
tests=0
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/test_gpu.log" || tests=$?
python3 benchmarks/gpu_check.py "$OUT" --steps "${STEPS:-10000}" --budget-s "${BUDGET_S:-200}" --skip "${SKIP:-}" \
    2>&1 | tee "$OUT/gpu_check.log"
python3 benchmarks/trainer_vs_hf.py --device cuda --bf16 --seeds 5 --vocab 2048 --seq 64 \
    --batch 256 --shapes L1-d16,L2-d16,L1-d32,L1-d64,L2-d64 --out "$OUT/trainer_vs_hf.json" \
    2>&1 | tee "$OUT/trainer_vs_hf.log"
if [ -z "${SKIP_MEMORY:-}" ]; then
    python3 benchmarks/stage_memory.py --sizes 8388608 --device cuda --steps 3 \
        --out "$OUT/stage_memory.json" 2>&1 | tee "$OUT/stage_memory.log"
fi
exit "$tests"  # the benchmarks still ran when a CUDA test failed; the exit status says so
