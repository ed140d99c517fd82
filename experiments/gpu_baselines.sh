#!/usr/bin/env bash
# Runs the GPU baselines on a lent machine and packs what they wrote for results/baselines/<gpu>/.
#
#   bash experiments/gpu_baselines.sh PART      PART = kernels | model | attention | all
#                                               | kernels_a | kernels_b | kernels_c (the kernel
#                                                 suites in calls of under 10 min, one run: RUN_ID=...)
#                                               | kernels_decode (attention_decode alone, RUN_ID=...:
#                                                 the point that replaces a baseline's decode rows)
#                                               | kernels_wo (wo_matmul alone, RUN_ID=...: likewise)
#
# Expects (see the device notes): wheels for hydra-core, omegaconf, antlr4, plotly and gguf in
# .whl/, and the SmolLM2 GGUF at $LAB_MODEL_PATH (joined from two carried parts by the caller).
# Everything it writes goes to $OUT: results.tgz (run directories) and log.txt.
set -uo pipefail
PART=${1:-all}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 LAB_CACHE_DIR=/tmp/lab-cache
RES=/tmp/lab-results
log() { echo "[gpu_baselines] $*" | tee -a "$OUT/log.txt"; }
lab() { log "python -m lab $*"; timeout "${LAB_TIMEOUT:-540}" python3 -m lab run "$@" results_dir=$RES report=false progress=false 2>&1 | tee -a "$OUT/log.txt" | grep -v '^\s*$' | tail -n 8; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv | tee -a "$OUT/log.txt"
case "$PART" in
  kernels|all)
    lab +experiment=kernels ;;&
  model|all)
    lab +experiment=quickstart
    lab +experiment=decode
    lab +experiment=decode model=llama3_8b 'scenario.peers=[]' 'scenario.batches=[1,8,32]' 'scenario.contexts=[512,2048,8192]'
    lab +experiment=perplexity ;;&
  attention|all)
    lab -m +experiment=attention_kv_tradeoff
    lab -m +experiment=attention_scaling ;;&
  wo_matmul)
    lab +experiment=kernels 'scenario.suites=[wo_matmul]' ;;
  kernels_a)
    lab +experiment=kernels run_id="${RUN_ID:?set RUN_ID}" 'scenario.suites=[attention_decode,wo_matmul]' ;;
  kernels_decode)
    lab +experiment=kernels run_id="${RUN_ID:?set RUN_ID}" 'scenario.suites=[attention_decode]' ;;
  kernels_wo)
    lab +experiment=kernels run_id="${RUN_ID:?set RUN_ID}" 'scenario.suites=[wo_matmul]' ;;
  kernels_c)
    lab +experiment=kernels run_id="${RUN_ID:?set RUN_ID}" 'scenario.suites=[sampling]' ;;
  kernels_b)
    lab +experiment=kernels run_id="${RUN_ID:?set RUN_ID}" 'scenario.suites=[attention_prefill,rope,rmsnorm,swiglu]' ;;
esac
tar czf "$OUT/results.tgz" -C "$RES" . && log "packed $(du -sh "$OUT/results.tgz" | cut -f1)"
