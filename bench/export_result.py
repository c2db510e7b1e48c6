#!/usr/bin/env python3
"""The result JSON of one exported-script bench run, read from the script's own log.

    python3 bench/export_result.py train_gpt.log --name export-record --commit abc1234 \
        --script train_gpt.py --out $OUT

The exported `train_gpt.py` prints the challenge's lines (`Code size:`, `Total submission
size`, `final_..._exact val_loss:… val_bpb:…`) and pgolf's key:value lines (warm-up, steps,
the final validation, the clock). This gathers them into the same kind of flat JSON as
bench/record_result.py, named DATE_NAME.json; commit it under bench/results/ when reported.
A run that stopped early is still recorded, with `complete: false`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

SIZE = re.compile(r"^(Serialized model pgolf|Code size|Total submission size pgolf): (\d+) bytes")
FINAL = re.compile(r"^final_pgolf_(\S+)_exact val_loss:(\S+) val_bpb:(\S+) eval_time:(\d+)ms")


def fields(line: str) -> dict[str, str]:
    """key:value pairs of one pgolf log line (the event word, if any, has no colon)."""
    return dict(tok.split(":", 1) for tok in line.split() if ":" in tok)


def parse(lines: list[str]) -> dict:
    out: dict = {"tokens_per_s_steps": []}
    for line in lines:
        line = line.strip()
        if m := SIZE.match(line):
            key = {"Serialized model pgolf": "artifact_bytes", "Code size": "code_bytes"}
            out[key.get(m[1], "total_bytes")] = int(m[2])
        elif m := FINAL.match(line):
            out.update(eval_tag=m[1], val_loss=float(m[2]), val_bpb=float(m[3]))
            out["eval_time_s"] = int(m[4]) / 1000
        elif line.startswith("warmup "):
            out["warmup_s"] = float(fields(line)["warmup_s"])
        elif line.startswith("run "):
            f = fields(line)
            out["global_batch_tokens"] = int(f["global_batch_tokens"])
            out["world_size"] = int(f["world_size"])
        elif line.startswith("step:") and "tokens_per_s:" in line:
            out["tokens_per_s_steps"].append(float(fields(line)["tokens_per_s"]))
        elif line.startswith("final "):
            f = fields(line)
            out.update(steps=int(f["step"]), train_s=float(f["train_s"]))
            out["val_bpb_prequant"] = float(f["val_bpb"])
        elif line.startswith("clock "):
            f = fields(line)
            out["pack_time_s"] = float(f["pack_time_s"])
            out["train_plus_pack_s"] = float(f["train_plus_pack_s"])
            out["torch"] = f["torch_version"]
    steps = out.pop("tokens_per_s_steps")
    # The first log window holds the clock's start; the median is the steady rate.
    out["tokens_per_s"] = round(statistics.median(steps)) if steps else None
    out["complete"] = "val_bpb" in out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("log", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--script", type=Path, required=True, help="the train_gpt.py that ran")
    ap.add_argument("--data-wall-s", type=float)
    ap.add_argument("--script-wall-s", type=float)
    ap.add_argument("--exit-code", type=int)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    # The device's name and torch's version; imported late so --help stays fast.
    from record_result import identity

    row = {
        **identity(args.name, args.commit, "bench-300 (exported train_gpt.py)"),
        "script_bytes": args.script.stat().st_size,
        "data_wall_s": args.data_wall_s,
        "script_wall_s": args.script_wall_s,
        "exit_code": args.exit_code,
        **parse(args.log.read_text(errors="replace").splitlines()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"{row['date']}_{args.name}.json"
    dest.write_text(json.dumps(row, indent=1) + "\n")
    keys = ("val_bpb_prequant", "val_bpb", "tokens_per_s", "total_bytes", "complete")
    print(f"result:{dest} " + " ".join(f"{k}:{row.get(k)}" for k in keys))


if __name__ == "__main__":
    main()
