#!/usr/bin/env bash
# Reproduce every number quoted in docs/applications.md (minutes on 2 CPU cores, mostly Figure 3).
# Usage: bash examples/applications.sh [OUT_DIR]   (default: examples/output)
#
# Every command is run once for the printed table (OUT/applications.log) and, where it has no file
# output of its own, once more with --json (OUT/json/NAME.json). OUT/json/NAME.args records the
# arguments. `python examples/docs_figures.py OUT` then prints the tables and findings that
# docs/applications.md quotes; tests/test_apps_docs.py checks the page against them.
set -euo pipefail
FB=${FB:-.venv/bin/faultbound}
PY=${PY:-$(dirname "$FB")/python}
OUT=${1:-examples/output}
mkdir -p "$OUT/json"
: > "$OUT/applications.log"
export COLUMNS=110

# run NAME [--json] ARGS...: run `faultbound ARGS`, log its table, record ARGS (with --json, keep JSON too).
run() {
  local name=$1; shift
  local json=0
  if [ "$1" = "--json" ]; then json=1; shift; fi
  printf '%s\n' "${*//$OUT/OUT}" > "$OUT/json/$name.args"  # the folder written as OUT
  echo "\$ faultbound $*" >> "$OUT/applications.log"
  $FB "$@" | tee -a "$OUT/applications.log"
  if [ $json = 1 ]; then $FB "$@" --json > "$OUT/json/$name.json"; fi
}

# 1. Train the networks (seeded): wave on [0,1]^2, K = 1, two hidden layers.
run wave train --dataset synthetic --K 1 --widths 16,16 --epochs 40 --out "$OUT/wave"
run wave_robust train --dataset synthetic --K 1 --widths 32,32 --epochs 60 --fep-weight 0.002 --failures 3,3 --out "$OUT/wave_robust"

# 2. Precision planning (Theorem 5).
run precision_paper --json precision "$OUT/wave/model.pt2" --eps 0.05 --eps-prime 0.025 --method paper
run precision_tight --json precision "$OUT/wave/model.pt2" --eps 0.05 --eps-prime 0.025
run precision_weights --json precision "$OUT/wave/model.pt2" --eps 0.05 --eps-prime 0.025 --weights

# 3. Boosting (Corollary 2).
run boost_chosen --json boost "$OUT/wave_robust/model.pt2" --eps 0.5 --eps-prime 0.085 --latency exponential --runs 100000 --seed 0
for lat in exponential pareto; do
  run boost_33_$lat --json boost "$OUT/wave_robust/model.pt2" --failures 3,3 --latency $lat --runs 100000 --seed 0
done
run boost_33_per_sender --json boost "$OUT/wave_robust/model.pt2" --failures 3,3 --latency pareto --runs 100000 --seed 0 --delays per-sender

# 4. Robustness against ease of learning (5.3), and the paper's figures.
run sweep sweep --out "$OUT/sweep"
run figures figures --out "$OUT/figures"

# 5. The tables and findings quoted in docs/applications.md.
"$PY" examples/docs_figures.py "$OUT" | tee "$OUT/quoted.md"
