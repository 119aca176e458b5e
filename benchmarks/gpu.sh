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
#                      against each family's transformers model one model at a time: GPT-2
#                      d 16 … 64, Llama and Mamba d 32 and 64 (needs transformers)
#   gpu_small/         the capacity grid of configs/gpu-small.yaml through the workflow (four of
#                      the paper's architectures, 2 seeds, bf16, the plateau schedule): its
#                      tables (capacity, laws, runs) as Parquet, the report and the wall time;
#                      set SKIP_GRID=1 to leave it out
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
    --batch 256 --shapes L1-d16,L2-d16,L1-d32,L1-d64,L2-d64,llama-L1-d32,llama-L2-d64,mamba-L1-d32,mamba-L2-d64 \
    --out "$OUT/trainer_vs_hf.json" \
    2>&1 | tee "$OUT/trainer_vs_hf.log"
if [ -z "${SKIP_GRID:-}" ]; then
    mkdir -p "$OUT/gpu_small"
    start=$(date +%s)
    snakemake --cores "$(nproc)" --resources gpu=4 --configfile configs/gpu-small.yaml \
        > "$OUT/gpu_small/snakemake.log" 2>&1 || tests=1
    echo "wall_s $(( $(date +%s) - start ))" | tee "$OUT/gpu_small/wall.txt"
    cp results/report.html "$OUT/gpu_small/" 2>/dev/null || true
    python3 -c "
import duckdb, sys
con = duckdb.connect('results/memcap.duckdb', read_only=True)
for t in ('capacity', 'laws', 'runs'):
    con.sql(f'SELECT * FROM {t}').write_parquet(f'{sys.argv[1]}/{t}.parquet')
print(con.sql('SELECT arch, params, n_at_max, capacity_bits, bits_per_param, saturated FROM capacity'))
print(con.sql(\"SELECT * FROM laws WHERE law = 'capacity'\"))
" "$OUT/gpu_small" 2>&1 | tee "$OUT/gpu_small/summary.txt" || true
fi
if [ -z "${SKIP_MEMORY:-}" ]; then
    python3 benchmarks/stage_memory.py --sizes 8388608 --device cuda --steps 3 \
        --out "$OUT/stage_memory.json" 2>&1 | tee "$OUT/stage_memory.log"
fi
exit "$tests"  # the benchmarks still ran when a CUDA test failed; the exit status says so
