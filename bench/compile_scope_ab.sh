#!/usr/bin/env bash
# compile_scope A/B on one GPU (issue 15's warm-up): the same preset's training step and
# scoring compiled as one whole-model graph ("model"), as that graph with nested block regions
# ("nested") and per block ("blocks"), each in its own process with empty Inductor/Triton
# caches, so each warm-up is a fresh machine's. SCOPES="model blocks" picks a subset.
#   source bench/gpu_carry.sh install && PRESET=record bash bench/compile_scope_ab.sh
# Writes $OUT/compile_scope_{train,eval}_SCOPE.log (key:value lines and the JSON summaries).
set -euo pipefail
preset=${PRESET:-record}
out=${OUT:-/tmp/compile_scope_ab}
mkdir -p "$out"
for scope in ${SCOPES:-model nested blocks}; do
  export TORCHINDUCTOR_CACHE_DIR=/tmp/ind_$scope TRITON_CACHE_DIR=/tmp/tri_$scope
  rm -rf "$TORCHINDUCTOR_CACHE_DIR" "$TRITON_CACHE_DIR"
  python3 bench/train_speed.py --preset "$preset" --backends "${BACKEND:-fa4}" --skip-agreement \
    --steps "${STEPS:-5}" --set train.compile_scope=$scope 2>&1 | tee "$out/compile_scope_train_$scope.log" | grep -E "tokens_per_s|Error" || true
  python3 bench/eval_speed.py --synthetic --preset "$preset" --modes none \
    --tokens "${EVAL_TOKENS:-500000}" --set eval.compile_scope=$scope \
    --out "$out/compile_scope_eval_$scope.json" 2>&1 | tee "$out/compile_scope_eval_$scope.log" | grep -E "mode:|Error" || true
done
