#!/usr/bin/env bash
# Nsight Compute on the int4 mma GEMV (the full section set, base clocks, caches flushed per pass):
# the report, its details page and its per-SASS-instruction stall samples, in $OUT. On a GPU
# machine with ncu, from the repo root:  OUT=/tmp/out bash experiments/probes/ncu_int4_mma.sh
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
set -x
NCU=/usr/local/cuda/bin/ncu
$NCU --set full --import-source no -k regex:_int4_mma_kernel -o $OUT/mma python experiments/probes/ncu_int4_mma.py > $OUT/ncu_log.txt 2>&1
$NCU -i $OUT/mma.ncu-rep --page details --csv > $OUT/details.csv 2>&1
$NCU -i $OUT/mma.ncu-rep --page source --csv --print-source sass > $OUT/source.csv 2>&1
ls -la $OUT; tail -5 $OUT/ncu_log.txt
