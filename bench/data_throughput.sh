#!/usr/bin/env bash
# Data build throughput on this machine: full stand-in corpus, then a 1-file subset.
# Usage: bench/data_throughput.sh [OUT_ROOT]   (default /tmp/pgolf-data-bench)
# Prints the load before and after each run: the 2-core dev machines are shared, and a
# contended run says little about per-core speed (compare CPU seconds as well as wall time).
set -euo pipefail
ROOT="${1:-/tmp/pgolf-data-bench}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="$HERE/../shared"
TOK="$SHARED/tokenizers/fineweb_1024_bpe.model"
mkdir -p "$ROOT"
run() {
    local name="$1"; shift
    echo "== $name  $(date -u +%Y-%m-%dT%H:%M:%SZ)  nproc:$(nproc)  load_before:$(cut -d' ' -f1-3 /proc/loadavg)"
    rm -rf "${ROOT:?}/$name"
    /usr/bin/time -f "wall_s:%e cpu_user_s:%U cpu_sys_s:%S max_rss_kb:%M" \
        pgolf data build --no-progress --tokenizer "$TOK" --out "$ROOT/$name" "$@"
    echo "load_after:$(cut -d' ' -f1-3 /proc/loadavg)"
    /usr/bin/time -f "info_wall_s:%e" pgolf data info "$ROOT/$name" --tokenizer "$TOK"
}
run full --input "$SHARED"/corpus/docs_00*.jsonl.zst --val-docs 50000
run one --input "$SHARED/corpus/docs_000.jsonl.zst" --val-docs 2000
run one_serial --input "$SHARED/corpus/docs_000.jsonl.zst" --val-docs 2000 --workers 1
