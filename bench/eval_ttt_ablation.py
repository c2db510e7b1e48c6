"""CPU ablation of score-first TTT: none / phase 1 only / phase 2 only / both, and the knobs.

    pgolf data build --tokenizer fineweb_1024_bpe.model --out /tmp/ev/data \
        --input first-5000-docs.jsonl --val-docs 800
    python bench/eval_ttt_ablation.py --data /tmp/ev/data --train-seconds 240

Trains a small GPT briefly on the train split (its own loop: the evaluator side must not
depend on pgolf.train), fake-quantizes its block matrices to int``--bits`` per row (the
damage phase 1 is meant to repair), then scores a val prefix under each TTT variant.
Figures feed the defaults in pgolf/config/eval.py and docs/BENCHMARKS.md (Appendix C, §4).
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

from pgolf.config import resolve  # noqa: E402
from pgolf.data.bpb import ByteTable  # noqa: E402
from pgolf.data.shards import load_split  # noqa: E402
from pgolf.eval.engine import run_eval  # noqa: E402
from pgolf.format.grid import fake_quantize_rows  # noqa: E402
from pgolf.model import GPT  # noqa: E402
from pgolf.runtime import Dist  # noqa: E402

# name -> eval overrides (on top of the tiny eval preset + --set)
VARIANTS = {
    "none": {"ttt": "none"},
    "phase1_only": {"ttt_phase1_chunks": -1, "ttt_phase2_from_chunk": -1},
    "phase2_only": {"ttt_phase1_chunks": 0, "ttt_phase2_from_chunk": 0},
    "both_handover_8": {"ttt_phase1_chunks": 8, "ttt_phase2_from_chunk": 8},
    "both_every_chunk": {"ttt_phase1_chunks": -1, "ttt_phase2_from_chunk": 0},
}


def train(model: GPT, tokens: np.ndarray, seconds: float, seq: int, batch: int) -> int:
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0, betas=(0.9, 0.95))
    rng = np.random.default_rng(0)
    ids = torch.as_tensor(tokens.astype(np.int64))
    t0, step = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - t0 < seconds:
        starts = torch.as_tensor(rng.integers(0, ids.numel() - seq - 1, size=batch))
        chunk = ids[starts[:, None] + torch.arange(seq + 1)]
        loss = model(chunk[:, :-1], chunk[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            print(f"train step:{step} loss:{loss.item():.4f}", flush=True)
    return step


def quantize(model: GPT, bits: int) -> GPT:
    q = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in q.named_parameters():
            if name.startswith("blocks.") and p.ndim == 2:
                p.copy_(fake_quantize_rows(p, bits))
    return q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", help="default: DATA/tokenizer.model")
    ap.add_argument("--train-seconds", type=float, default=240)
    ap.add_argument("--val-tokens", type=int, default=100_000)
    ap.add_argument("--bits", type=int, default=5, help="fake-quant bits (0 = keep fp32)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--extra", action="append", default=[], help="NAME:key=v,key=v variant")
    ap.add_argument("--checkpoint", help="reuse/save trained weights here (.pt of a state dict)")
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no oversubscription)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = resolve("tiny", ["model.vocab_size=1024", *args.overrides])
    tok = args.tokenizer or str(Path(args.data) / "tokenizer.model")
    table = ByteTable.from_model(tok)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    ck = Path(args.checkpoint) if args.checkpoint else None
    if ck and ck.is_file():  # resume: more --train-seconds continue training it
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ck)))
    if args.train_seconds > 0:
        steps = train(model, load_split(args.data, "train"), args.train_seconds, 128, 32)
        print(f"trained steps:{steps}", flush=True)
        if ck:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ck))
    model.eval()
    qmodel = quantize(model, args.bits) if args.bits else model
    val = load_split(args.data, "val", max_tokens=args.val_tokens)
    variants = {k: VARIANTS[k] for k in args.variants.split(",") if k}
    for spec in args.extra:
        name, kv = spec.split(":", 1)
        variants[name] = dict(x.split("=", 1) for x in kv.split(","))
    rows = []
    for name, over in variants.items():
        from pgolf.config.base import replace_fields

        ecfg = replace_fields(cfg.eval, {"device": "cpu", **over}, "eval")
        t0 = time.perf_counter()
        res = run_eval(copy.deepcopy(qmodel), val, table, ecfg, Dist())
        row = {
            "variant": name,
            "val_bpb": round(res.totals.val_bpb, 5),
            "val_loss": round(res.totals.val_loss, 5),
            "ttt_steps": res.ttt_steps,
            "time_ttt_s": round(res.times["ttt"], 2),
            "time_score_s": round(res.times["score"], 2),
            "wall_s": round(time.perf_counter() - t0, 2),
        }
        rows.append(row)
        print(" ".join(f"{k}:{v}" for k, v in row.items()), flush=True)
    if not args.bits:
        pass
    else:
        fp = run_eval(
            copy.deepcopy(model),
            val,
            table,
            dataclasses.replace(cfg.eval, ttt="none", device="cpu"),
            Dist(),
        )
        print(f"reference fp32_no_ttt val_bpb:{fp.totals.val_bpb:.5f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "eval": dataclasses.asdict(cfg.eval)}))


if __name__ == "__main__":
    main()
