#!/usr/bin/env python3
"""One bench run's JSON summary, flattened for bench/results/ (one small file per run).

    python3 bench/record_result.py RUN_DIR --name default-fa4 --commit abc1234 --out $OUT

Reads RUN_DIR/summary.json (written by `pgolf run`) and adds what makes figures comparable
across days: date, device, GPU count, commit, tokenizer, protocol. The file is named
DATE_NAME.json; commit it under bench/results/ when the run is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch


def identity(name: str, commit: str, protocol: str, gpus: int | None = None) -> dict:
    """What makes a result comparable across days: what ran, where, when, at which commit."""
    return {
        "name": name,
        "protocol": protocol,
        "date": dt.date.today().isoformat(),
        "commit": commit,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "gpus": gpus or max(1, torch.cuda.device_count()),
        "torch": torch.__version__,
    }


def flatten(summary: dict, name: str, commit: str, protocol: str, bench_wall_s: float | None):
    train = summary.get("train") or {}
    evals = summary.get("eval") or {}
    pack = summary.get("pack") or {}
    row = identity(name, commit, protocol, summary.get("gpus"))
    gpus = row["gpus"]
    return {
        **row,
        "preset": summary.get("preset"),
        "tokens_per_s": train.get("tokens_per_s_median"),
        "tokens_per_s_per_gpu": (train.get("tokens_per_s_median") or 0) / gpus or None,
        "steps": train.get("steps"),
        "val_bpb_prequant": train.get("val_bpb_prequant"),
        "val_bpb_postpack": summary.get("val_bpb_postpack"),
        "val_bpb_ttt": summary.get("val_bpb_ttt"),
        "eval_modes": {m: e.get("val_bpb") for m, e in evals.items()},
        "artifact_bytes": summary.get("artifact_bytes"),
        "code_bytes": pack.get("code_bytes"),
        "total_bytes": summary.get("total_bytes"),
        "stage_wall_s": summary.get("stage_wall_s"),
        "total_wall_s": summary.get("total_wall_s"),
        "bench_wall_s": bench_wall_s,
        "summary": summary,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--name", required=True, help="what ran, e.g. default-fa4")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--protocol", default="bench-300")
    ap.add_argument("--bench-wall-s", type=float)
    ap.add_argument("--out", type=Path, required=True, help="folder for DATE_NAME.json")
    args = ap.parse_args()
    path = args.run_dir / "summary.json"
    if not path.is_file():
        sys.exit(f"no {path}: the pipeline did not finish; nothing to record")
    row = flatten(
        json.loads(path.read_text()), args.name, args.commit, args.protocol, args.bench_wall_s
    )
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / f"{row['date']}_{args.name}.json"
    dest.write_text(json.dumps(row, indent=1) + "\n")
    print(
        f"result:{dest} "
        + " ".join(
            f"{k}:{row[k]}"
            for k in ("val_bpb_postpack", "val_bpb_ttt", "tokens_per_s", "total_bytes")
        )
    )


if __name__ == "__main__":
    main()
