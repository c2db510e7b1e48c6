#!/usr/bin/env bash
# The attention-kernel measurements (issue 15) on a 2-GPU machine: two jobs side by side, each
# on one GPU with half the cores, so they neither share a GPU nor starve each other's CPU.
#   GPU 0  bench/train_speed.py: FA4 vs cuDNN agreement (fwd + q/k/v grads against fp32 math),
#          then the default model's step at the record batch (786,432 tokens, micro 48) with
#          fa4 and with sdpa_cudnn, then fa4 at bench-300's batch (196,608) with a kernel profile
#   GPU 1  bench/eval_speed.py: sliding-window scoring (stride 64) of 1 M synthetic tokens with
#          fa4 and with sdpa_cudnn, then the record preset's TTT modes on 200 k tokens
# Run after `source bench/gpu_carry.sh install`. Logs and JSON land in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/kernels_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
half=$(($(nproc) / 2))
on_gpu() { # GPU_INDEX COMMAND...: one GPU, its half of the cores, matching thread counts
  local i=$1
  shift
  CUDA_VISIBLE_DEVICES=$i OMP_NUM_THREADS=$half taskset -c $((i * half))-$((i * half + half - 1)) "$@"
}
{
  on_gpu 0 timeout 300 python3 bench/train_speed.py --backends fa4,sdpa_cudnn --micro 48 --steps 7
  on_gpu 0 timeout 200 python3 bench/train_speed.py --skip-agreement --backends fa4 --micro 48 \
    --steps 7 --set train.global_batch_tokens=196608 --profile
} >"$out/train_speed.log" 2>&1 &
{
  for backend in fa4 sdpa_cudnn; do
    on_gpu 1 timeout 150 python3 bench/eval_speed.py --synthetic --tokens 1000000 --modes none \
      --set model.attention_backend=$backend --out "$out/eval_$backend.json"
  done
  on_gpu 1 timeout 200 python3 bench/eval_speed.py --synthetic --preset record --tokens 200000 \
    --modes two-phase,phased,lora --out "$out/eval_record_ttt.json"
} >"$out/eval_speed.log" 2>&1 &
wait
grep -h "backend:\|agree_backend\|profile_backend\|kernel_ms" "$out/train_speed.log" | head -60
grep -h "^mode:\|error\|Error" "$out/eval_speed.log" | cut -c1-400
