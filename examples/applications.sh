#!/usr/bin/env bash
# Reproduce every number quoted in docs/applications.md (about 1-2 minutes on 2 CPU cores).
# Usage: bash examples/applications.sh [OUT_DIR]   (default: examples/output)
set -euo pipefail
FB=${FB:-.venv/bin/faultbound}
OUT=${1:-examples/output}
mkdir -p "$OUT"
export COLUMNS=110

# 1. Train the networks (seeded): wave on [0,1]^2, K = 1, two hidden layers.
$FB train --dataset synthetic --K 1 --widths 16,16 --epochs 40 --out "$OUT/wave"
$FB train --dataset synthetic --K 1 --widths 32,32 --epochs 60 --fep-weight 0.002 --failures 3,3 --out "$OUT/wave_robust"

# 2. Precision planning (Theorem 5).
$FB precision "$OUT/wave/model.pt2" --eps 0.05 --eps-prime 0.025 --method paper
$FB precision "$OUT/wave/model.pt2" --eps 0.05 --eps-prime 0.025
$FB precision "$OUT/wave/model.pt2" --eps 0.05 --eps-prime 0.025 --weights

# 3. Boosting (Corollary 2).
$FB boost "$OUT/wave_robust/model.pt2" --eps 0.5 --eps-prime 0.085 --latency exponential --runs 100000 --seed 0
for lat in exponential pareto; do
  $FB boost "$OUT/wave_robust/model.pt2" --failures 3,3 --latency $lat --runs 100000 --seed 0
done

# 4. Robustness against ease of learning (5.3), and the paper's figures.
$FB sweep --out "$OUT/sweep"
$FB figures --out "$OUT/figures"
