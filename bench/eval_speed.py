"""Evaluator speed on one GPU, projected to the challenge: 62 M val tokens on 8×H100.

    # real artifact (or checkpoint run dir) on the stand-in val split
    python bench/eval_speed.py runs/x/artifact.pgolf --data DIR --tokenizer fineweb_1024_bpe.model \
        --max-tokens 1500000
    # no files needed: a random `default` model and random val tokens
    python bench/eval_speed.py --synthetic --tokens 1500000

Runs sliding-window scoring once per TTT mode (default: none, two-phase), each on a fresh
copy of the model, and prints per-phase wall times (load, compile, TTT, score) and a
projection. Scaling assumption, stated in the output: scoring and TTT are data-parallel
(windows and TTT sequences split evenly over ranks, one small all-reduce per chunk / step),
so per-token time divides by the GPU count; load and compile do not shrink. A
"TTT not scaled" column bounds the case where 1/8 of a chunk is too small a batch to keep
a GPU busy. Keep ``--tokens`` around 1.5 M: under 5 minutes on one H100.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf import runtime  # noqa: E402
from pgolf.config import resolve  # noqa: E402
from pgolf.data.bpb import ByteTable  # noqa: E402
from pgolf.eval.engine import run_eval  # noqa: E402
from pgolf.eval.load import build_model, check_tokenizer, load_artifact, load_val  # noqa: E402

FULL_VAL_TOKENS = 62_000_000
TARGET_GPUS = 8


def synthetic_inputs(args, cfg):
    """A random `default` model, random tokens and a plausible byte table (~2.4 bytes/token)."""
    torch.manual_seed(0)
    from pgolf.model import GPT

    mcfg = cfg.model
    model = GPT(mcfg)
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, mcfg.vocab_size, size=args.tokens).astype(np.uint16)
    tokens[::700] = mcfg.bos_id  # document boundaries roughly every 700 tokens
    base = rng.integers(1, 5, size=mcfg.vocab_size).astype(np.int16)
    lead = rng.random(mcfg.vocab_size) < 0.6
    boundary = np.zeros(mcfg.vocab_size, dtype=bool)
    boundary[:4] = True
    base[:4], lead[:4] = 0, False
    return model, tokens, ByteTable(base, lead, boundary), 0.0, 0


def real_inputs(args, cfg):
    loaded = load_artifact(args.artifact)
    table = check_tokenizer(loaded, args.tokenizer)
    tokens = load_val(args.data, table.vocab_size, cfg.eval.window, args.max_tokens)
    return build_model(loaded), tokens, table, loaded.seconds, loaded.artifact_bytes


def project(r: dict, n_tokens: int) -> dict:
    scale = FULL_VAL_TOKENS / n_tokens
    fixed = r["time_load_s"] + r["time_compile_s"]
    score8 = r["time_score_s"] * scale / TARGET_GPUS
    ttt8 = r["time_ttt_s"] * scale / TARGET_GPUS
    return {
        "proj_8gpu_62M_s": fixed + score8 + ttt8,
        "proj_8gpu_62M_ttt_not_scaled_s": fixed + score8 + r["time_ttt_s"] * scale,
        "proj_1gpu_62M_s": fixed + (r["time_score_s"] + r["time_ttt_s"]) * scale,
        "score_tokens_per_s": n_tokens / max(r["time_score_s"], 1e-9),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("artifact", nargs="?", help=".pgolf artifact or checkpoint run dir")
    ap.add_argument("--data", help="dir with fineweb_val_*.bin")
    ap.add_argument("--tokenizer", help="SentencePiece model the artifact was trained with")
    ap.add_argument("--max-tokens", type=int, default=1_500_000, help="val prefix to score")
    ap.add_argument("--synthetic", action="store_true", help="random default model + tokens")
    ap.add_argument("--tokens", type=int, default=1_500_000, help="synthetic val length")
    ap.add_argument("--modes", default="none,two-phase", help="comma-separated eval.ttt modes")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="SECTION.KEY=V")
    ap.add_argument("--out", help="write all results as JSON here")
    args = ap.parse_args()
    if not args.synthetic and not (args.artifact and args.data and args.tokenizer):
        ap.error("give ARTIFACT --data --tokenizer, or --synthetic")

    cfg = resolve(args.preset, args.overrides)
    d = runtime.init(cfg.eval.device)
    device = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else "cpu"
    t0 = time.perf_counter()
    model, tokens, table, load_s, art_bytes = (synthetic_inputs if args.synthetic else real_inputs)(
        args, cfg
    )
    print(f"bench:eval_speed device:{device} tokens:{tokens.size} load_s:{load_s:.2f} "
          f"inputs_s:{time.perf_counter() - t0:.2f} artifact_bytes:{art_bytes}")  # fmt: skip
    results = []
    for mode in args.modes.split(","):
        ecfg = dataclasses.replace(cfg.eval, ttt=mode)
        if d.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        res = run_eval(copy.deepcopy(model), tokens, table, ecfg, d)
        total = time.perf_counter() - start
        r = {
            "mode": mode,
            "val_bpb": res.totals.val_bpb,
            "val_loss": res.totals.val_loss,
            "tokens_scored": res.totals.tokens,
            "time_load_s": load_s,
            "time_compile_s": res.times["compile"],
            "time_ttt_s": res.times["ttt"],
            "time_score_s": res.times["score"],
            "time_run_s": total,
            "ttt_chunks": res.chunks,
            "ttt_steps": res.ttt_steps,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30
            if d.device.type == "cuda"
            else 0.0,
        }
        r.update(project(r, int(tokens.size)))
        results.append(r)
        print(
            " ".join(f"{k}:{v:.4f}" if isinstance(v, float) else f"{k}:{v}" for k, v in r.items())
        )
    print(
        "assumption: score and TTT time per token divide by the GPU count (data-parallel, one "
        "all-reduce per chunk/step); load+compile are paid once; 'ttt_not_scaled' keeps TTT at "
        "its 1-GPU rate."
    )
    settings = {
        "device": device,
        "tokens": int(tokens.size),
        "eval": dataclasses.asdict(cfg.eval),
        "synthetic": args.synthetic,
    }
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    runtime.shutdown()


if __name__ == "__main__":
    main()
