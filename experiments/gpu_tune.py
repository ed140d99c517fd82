"""Runs the kernel suites' `tune()` sweeps on a lent GPU in one call, each under its own time
limit, and keeps going when one fails. What the tile tables in kernels/ were set from.

    python experiments/gpu_tune.py wo_matmul attention_decode sampling attention_prefill

Prints each sweep's compact lines; writes every row to $OUT/tune-<suite>.json (or /tmp/out).
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

SWEEPS = {  # suite -> keyword arguments of lab.benchmarks.<suite>.tune
    "wo_matmul": dict(Ms=(1,), schemes=("int4", "int4-mma")),
    "attention_decode": {},
    "sampling": {},
    "attention_prefill": {},
}


def main(suites: list[str]) -> int:
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    unknown = [s for s in suites if s not in SWEEPS]
    if unknown:
        print(f"error: unknown suite(s) {unknown}; known: {list(SWEEPS)}", file=sys.stderr)
        return 2
    failed = 0
    for suite in suites or list(SWEEPS):
        t0 = time.perf_counter()
        print(f"=== {suite}", flush=True)
        try:
            rows = importlib.import_module(f"lab.benchmarks.{suite}").tune(**SWEEPS[suite])
            (out / f"tune-{suite}.json").write_text(json.dumps(rows, default=str, indent=1))
        except Exception:  # one broken sweep must not cost the others their device time
            traceback.print_exc()
            failed += 1
        print(f"=== {suite}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
