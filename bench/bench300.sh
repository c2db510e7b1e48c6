#!/usr/bin/env bash
# bench-300 (../shared/bench/PROTOCOL.md) on one GPU machine, end to end in < 600 s.
#
# Prepare here (once), then run on the device with `.carry` and `.whl` carried:
#   bash ../shared/bench/make_carry.sh .carry/bench_subset.jsonl.xz
#   cp ../shared/tokenizers/fineweb_1024_bpe.model .carry/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl zstandard brotli
#   device run: bash bench/bench300.sh [extra pgolf run args, e.g. --set train.x=y]
#
# Prints the pipeline's summary JSON last and copies logs, plots and reports to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s.%N)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
run=${BENCH_DIR:-/tmp/bench300}
out=${OUT:-$run/out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
set +e
python3 -m pgolf.cli run --out "$run" --preset default \
  --input .carry/bench_subset.jsonl.xz --tokenizer .carry/fineweb_1024_bpe.model \
  --train-seconds "${TRAIN_SECONDS:-300}" --set data.val_docs=2000 "$@" 2>&1 | tee "$out/pipeline.log"
code=${PIPESTATUS[0]}
set -e
for f in summary.json summary.md eval_none.json eval_two-phase.json train/loss_curve.png; do
  [ -f "$run/$f" ] && cp "$run/$f" "$out/$(basename "$f")"
done
tar czf "$out/logs.tgz" -C "$run" logs train/train_log.jsonl config.json 2>/dev/null || true
echo "bench_wall_s: $(python3 -c "import time; print(round(time.time() - $t0, 1))")"
exit "$code"
