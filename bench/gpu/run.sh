#!/usr/bin/env bash
# On the GPU machine, from the repository root, after bench/gpu/prepare.sh here and with bench/gpu/carry carried:
#   bash bench/gpu/run.sh            results in $OUT (or bench/gpu/out): results.md, results.json, logs/
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/gpu/out}
SITE=/tmp/lmtune-site
python3 -m pip install -q --no-index --no-deps --target "$SITE" bench/gpu/carry/wheels/*.whl 2>&1 | tail -3
export PYTHONPATH="$SITE:$PWD/src" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT" && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 560 python3 bench/gpu/check.py --output "$OUT" --budget-s 520
