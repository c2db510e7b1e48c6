#!/usr/bin/env python3
"""Write the `train_gpt.py` that `pgolf export` would write for a bench run's config.

    python3 bench/export_script.py --preset record --gpus 1 --train-seconds 300 \
        --set data.val_docs=2000 --set train.val_every_steps=0 --out /tmp/chal/train_gpt.py

`pgolf export` takes finished run folders; a benchmark of the exported script needs the
script *before* any run, for the config `pgolf run` would resolve: the preset, then the
pipeline's scaling rule for --gpus/--train-seconds, then the --set overrides (the same order
as `pgolf run`). Prints the config's size figures as key:value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf.export.bundle import build_script  # noqa: E402
from pgolf.logs import format_line  # noqa: E402
from pgolf.pipeline.scaling import resolve_scaled  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--train-seconds", type=float, default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    run, _ = resolve_scaled(
        args.preset, args.overrides, nproc=args.gpus, train_seconds=args.train_seconds
    )
    script = build_script(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # latin-1, as the file's coding line says: write the bytes, never text.
    args.out.write_bytes(script.text.encode())
    print(
        format_line(
            {
                "script": args.out,
                "script_bytes": args.out.stat().st_size,
                "codec": script.codec,
                "modules": len(script.modules),
                "global_batch_tokens": run.train.global_batch_tokens,
                "train_seconds": run.train.train_seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
