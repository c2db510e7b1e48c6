#!/usr/bin/env bash
# bench-300 (../shared/bench/PROTOCOL.md) on one GPU machine, end to end in < 600 s.
#
# Prepare here (once), then run on the device with `.carry` and `.whl` carried:
#   bash ../shared/bench/make_carry.sh .carry/bench_subset.jsonl.xz
#   cp ../shared/tokenizers/fineweb_1024_bpe.model .carry/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl zstandard brotli
#   device run: bash bench/bench300.sh [extra pgolf run args, e.g. --set train.x=y]
# With the GPU kernels (flash-attn-4): carry them as bench/gpu_carry.sh says and
# `source bench/gpu_carry.sh install` first (this script then installs nothing itself).
# Environment: PRESET (default), TOKENIZER (fineweb_1024_bpe.model), GPUS (1: bench-300;
# 2: bench-300-2gpu, bench/PROTOCOL-2GPU.md), NAME and COMMIT (for the result file),
# BENCH_DIR, TRAIN_SECONDS, PIPELINE_TIMEOUT. Two runs side by side on a 2-GPU machine:
# give each CUDA_VISIBLE_DEVICES, half the cores (taskset) and OMP_NUM_THREADS.
#
# Prints the pipeline's summary JSON last and copies logs, plots and reports to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s.%N)
if [ ! -d /tmp/site-packages ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site-packages .whl/*.whl
  export PYTHONPATH="/tmp/site-packages:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
run=${BENCH_DIR:-/tmp/bench300}
out=${OUT:-$run/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
set +e
# 570 s: the device kills a call at 600 s; the copy-out below must still run.
timeout "${PIPELINE_TIMEOUT:-570}" python3 -m pgolf.cli run --out "$run" --preset "${PRESET:-default}" \
  --gpus "${GPUS:-1}" --input .carry/bench_subset.jsonl.xz \
  --tokenizer ".carry/${TOKENIZER:-fineweb_1024_bpe.model}" \
  --train-seconds "${TRAIN_SECONDS:-300}" --set data.val_docs=2000 \
  --set train.val_every_steps=0 --set train.checkpoint_every_steps=0 "$@" 2>&1 | tee "$out/pipeline.log"
code=${PIPESTATUS[0]}
set -e
cp "$run/summary.json" "$out/" 2>/dev/null || true
cp "$run/train/loss_curve.png" "$out/" 2>/dev/null || true
(cd "$run" && tar czf "$out/results.tgz" summary.json summary.md pack.json eval_*.json logs \
  train/train_log.jsonl config.json overrides.json 2>/dev/null) || true
if [ -n "${EXPORT_CKPT:-}" ] && [ -f "$run/train/checkpoint.safetensors" ]; then
  # The trained checkpoint as fp16 in <16 MiB parts (the device returns files up to 16 MiB),
  # for packing benchmarks on the development machine: cat ckpt.part-* > checkpoint.safetensors
  python3 - "$run/train" <<'PY'
import sys, json, torch
from safetensors.torch import load_file, save_file
d = sys.argv[1]
t = {k: v.half() for k, v in load_file(f"{d}/checkpoint.safetensors").items()}
save_file(t, "/tmp/ckpt16.safetensors", metadata={"pgolf_config": open(f"{d}/config.json").read()})
PY
  split -b 15M -d /tmp/ckpt16.safetensors "$out/ckpt.part-"
fi
wall=$(python3 -c "import time; print(round(time.time() - $t0, 1))")
echo "bench_wall_s: $wall"
protocol=bench-300; [ "${GPUS:-1}" = 1 ] || protocol="bench-300-${GPUS}gpu"
python3 bench/record_result.py "$run" --name "${NAME:-${PRESET:-default}}" \
  --commit "${COMMIT:-unknown}" --protocol "$protocol" --bench-wall-s "$wall" --out "$out" || true
exit "$code"
