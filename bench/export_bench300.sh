#!/usr/bin/env bash
# bench-300 (../shared/bench/PROTOCOL.md) through the exported `train_gpt.py` instead of
# `pgolf run`: the script `pgolf export` writes for the same config, run where pgolf is not
# importable, in the challenge's layout (data/datasets/fineweb10B_spN, data/tokenizers/).
# Issue 14: it must train, pack and score within the protocol and match `pgolf run`.
#
# Device: carry as bench/gpu_carry.sh says, `source bench/gpu_carry.sh install`, then
#   PRESET=record TOKENIZER=fineweb_8192_bpe.model COMMIT=abc1234 bash bench/export_bench300.sh
# Environment: PRESET (default), TOKENIZER (fineweb_1024_bpe.model), TRAIN_SECONDS (300),
# INPUT (.carry/bench_subset.jsonl.xz), VAL_DOCS (2000), WORK (/tmp/export300), NAME, COMMIT,
# SCRIPT_TIMEOUT (560 s: the device ends a call at 600 s and the copy-out must still run),
# EXTRA_SETS (more --set overrides, space-separated), PYTHON (the script's interpreter:
# `python3`; where pgolf is pip-installed, e.g. a smoke test on the dev machine: `python3 -S -s`
# with site-packages on PYTHONPATH, as tests/test_export.py does). Writes the script's log and the result
# JSON (bench/export_result.py) to $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
preset=${PRESET:-default}
tok=${TOKENIZER:-fineweb_1024_bpe.model}
vocab=$(sed -E 's/.*_([0-9]+)_bpe\.model/\1/' <<<"$tok")
work=${WORK:-/tmp/export300}
out=${OUT:-$work/out}
data=$work/data/datasets/fineweb10B_sp$vocab
mkdir -p "$out" "$work/data/tokenizers"
export PYTHONUNBUFFERED=1
t0=$(date +%s.%N)

# 1. Shards in the challenge's layout (kept between calls: a second call reuses them).
if [ ! -f "$data/manifest.json" ]; then
  python3 -m pgolf.cli data build --input "${INPUT:-.carry/bench_subset.jsonl.xz}" \
    --tokenizer ".carry/$tok" --val-docs "${VAL_DOCS:-2000}" --out "$data" --no-progress
fi
cp ".carry/$tok" "$work/data/tokenizers/"
t_data=$(date +%s.%N)

# 2. The script for the config `pgolf run --gpus 1 --train-seconds T` would resolve.
sets=(--set "data.val_docs=${VAL_DOCS:-2000}" --set train.val_every_steps=0
  --set train.checkpoint_every_steps=0)
for s in ${EXTRA_SETS:-}; do sets+=(--set "$s"); done
python3 bench/export_script.py --preset "$preset" --gpus 1 \
  --train-seconds "${TRAIN_SECONDS:-300}" "${sets[@]}" --out "$work/train_gpt.py" | tee "$out/script.txt"
cp "$work/train_gpt.py" "$out/"

# 3. Run it alone: no pgolf on the path (the repo is not installed; PYTHONPATH keeps only the
# carried GPU packages), proven before the run.
cd "$work"
export PYTHONPATH
PYTHONPATH=$(tr ':' '\n' <<<"${PYTHONPATH:-}" | grep -v -x -F "$repo" | grep -v '^$' | paste -sd: || true)
py=${PYTHON:-python3}
if $py -c 'import pgolf' 2>/dev/null; then
  echo "error: pgolf is importable in $work; the exported script must run without it" >&2
  exit 2
fi
set +e
DATA_PATH="$data" TOKENIZER_PATH="data/tokenizers/$tok" RUN_ID=bench \
  timeout "${SCRIPT_TIMEOUT:-560}" $py train_gpt.py 2>&1 | tee "$out/train_gpt.log"
code=${PIPESTATUS[0]}
set -e
t_end=$(date +%s.%N)
cp runs/bench/train_log.jsonl "$out/" 2>/dev/null || true
cd "$repo"
PYTHONPATH="$repo:${PYTHONPATH:-}" python3 bench/export_result.py "$out/train_gpt.log" \
  --name "${NAME:-export-$preset}" --commit "${COMMIT:-unknown}" --script "$work/train_gpt.py" \
  --data-wall-s "$(python3 -c "print(round($t_data - $t0, 1))")" \
  --script-wall-s "$(python3 -c "print(round($t_end - $t_data, 1))")" \
  --exit-code "$code" --out "$out" || true
exit "$code"
