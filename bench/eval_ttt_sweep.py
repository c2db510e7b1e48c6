#!/usr/bin/env python3
"""Score-first TTT sweep on a real artifact: one load, one process, several eval configs.

    python bench/eval_ttt_sweep.py ARTIFACT --data DIR --tokenizer M [--preset record] \
        --variant none:ttt=none --variant p2_lr1e-2:ttt_phase2_lr=0.01 ...

Each variant is ``NAME:key=value,key=value`` over the eval section of --preset (on top of
``--set``).
Variants run in order from the artifact's weights (reset between runs). Prints one
key:value line per variant and a JSON list at the end; used to choose the TTT defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf.config import resolve  # noqa: E402
from pgolf.eval.evaluate import evaluate_many  # noqa: E402
from pgolf.logs import format_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("artifact")
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME:key=v,key=v")
    ap.add_argument("--preset", default="default", help="whose eval section the variants change")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--max-tokens", type=int, default=None)
    args = ap.parse_args()
    names, cfgs = [], []
    for spec in args.variant:
        name, _, kv = spec.partition(":")
        sets = [f"eval.{item}" for item in kv.split(",") if item]
        names.append(name)
        cfgs.append(resolve(args.preset, [*args.overrides, *sets]).eval)
    reports = evaluate_many(
        args.artifact, args.data, args.tokenizer, cfgs, max_tokens=args.max_tokens
    )
    rows = []
    for name, r in zip(names, reports, strict=True):
        row = {
            "variant": name,
            "val_bpb": round(r["val_bpb"], 6),
            "time_ttt_s": round(r["time_ttt_s"], 1),
            "time_score_s": round(r["time_score_s"], 1),
            "time_compile_s": round(r["time_compile_s"], 1),
        }
        rows.append(row)
        print(format_line(row), flush=True)
    print("sweep_json " + json.dumps(rows))


if __name__ == "__main__":
    main()
