"""Packing quality on a trained checkpoint: bytes vs val_bpb for rounding, clip search and GPTQ.

    python bench/pack_quality.py RUN_DIR --data DATA_DIR --tokenizer TOK.model \\
        [--max-tokens 524288] [--calib 16,128] [--json OUT.json]

Every variant is a real pack (bytes = the container, code excluded), decoded and scored with
stride-64 sliding-window eval without TTT on the first --max-tokens val tokens (the same
tokens for every variant, so differences are paired). Two error proxies come with it:
weight error (parameter-weighted ||W - Q||^2 / ||W||^2, what the budget search ranks by) and
held-out output error tr(E H E^T) / tr(W H W^T) of the block matrices, with H from val text
*after* the scored tokens (GPTQ never sees it). The last rows run the real budget search
(`pgolf pack`) with and without GPTQ: what the pipeline would ship.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from pgolf import runtime
from pgolf.checkpoint import load_checkpoint
from pgolf.config import resolve
from pgolf.config.pack import PackConfig, parse_bits
from pgolf.data.bpb import ByteTable
from pgolf.eval.engine import run_eval
from pgolf.eval.load import load_val
from pgolf.format import load_artifact
from pgolf.format.reader import tokenizer_identity
from pgolf.model import GPT
from pgolf.pack import budget as B
from pgolf.pack import gptq
from pgolf.pack import quantize as Q
from pgolf.pack.api import code_bytes_for
from pgolf.pack.packer import pack_state, weighted_error
from pgolf.pack.plain import plain_pack

# (bits e/a/m, prune fraction, quantizer: "clip" or "gptqN" with N calibration samples)
VARIANTS = [
    ("8/6/6", 0.0, "clip"),
    ("8/6/5", 0.0, "clip"),
    ("8/6/5.5", 0.0, "clip"),
    ("8/6/6", 0.0, "gptq{lo}"),
    ("8/6/5", 0.0, "gptq{lo}"),
    ("8/6/6", 0.0, "gptq{hi}"),
    ("8/6/5.5", 0.0, "gptq{hi}"),
    ("8/6/5", 0.0, "gptq{hi}"),
    ("8/5.5/5", 0.0, "gptq{hi}"),
    ("8/6/5", 0.1, "gptq{hi}"),
]


def val_hessians(model_cfg, tensors, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    model = gptq.calibration_model(tensors, model_cfg)
    device = next(model.parameters()).device
    hs: dict[str, torch.Tensor] = {}
    for chunk in ids.split(8):  # float64 sums over a few chunks keep memory small
        for k, h in gptq.collect_hessians(model, chunk.to(device)).items():
            hs[k] = hs.get(k, 0) + h
    return {k: v.float().cpu() for k, v in hs.items()}


def output_error(tensors, decoded, hessians, cfg) -> float:
    """Parameter-weighted tr(E H E^T) / tr(W H W^T) over the attention and MLP matrices."""
    errs = {}
    for name, w in tensors.items():
        if name in hessians and Q.classify(name, w, cfg) in ("attn", "mlp"):
            h, w = hessians[name], w.float()
            e = w - decoded[name].float()
            errs[name] = float(((e @ h) * e).sum() / ((w @ h) * w).sum())
    return weighted_error(errs, tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument(
        "--max-tokens", type=int, default=524_288, help="val tokens scored (0: all but held-out)"
    )
    ap.add_argument("--heldout-seqs", type=int, default=32, help="1024-token seqs for H_val")
    ap.add_argument("--calib", default="16,128", help="GPTQ calibration sample counts lo,hi")
    ap.add_argument(
        "--variants",
        help="comma-separated BITS:PRUNE:QUANTIZER (e.g. 8/5.5/5.5:0:gptq128) instead of the set",
    )
    ap.add_argument("--no-search", action="store_true", help="skip the budget-search rows")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    d = runtime.init("auto")
    tensors, run, _ = load_checkpoint(args.checkpoint)
    cfg = dataclasses.replace(run.pack, search=False)
    tok = tokenizer_identity(args.tokenizer)
    table = ByteTable.from_model(args.tokenizer)
    ecfg = dataclasses.replace(resolve("default").eval, ttt="none", compile=False)
    everything = load_val(args.data, table.vocab_size, ecfg.window, None)
    n_held = args.heldout_seqs * 1024
    n_scored = args.max_tokens or everything.size - n_held
    if everything.size < n_scored + n_held:
        raise SystemExit(f"val has {everything.size} tokens; need --max-tokens + {n_held}")
    scored = everything[:n_scored]
    held = torch.from_numpy(everything[-n_held:].astype(np.int64)).view(-1, 1024)
    h_val = val_hessians(run.model, tensors, held)

    def score(state) -> float:
        model = GPT(run.model)
        model.load_state_dict(state, strict=False)
        return run_eval(model.float(), scored, table, ecfg, d).totals.val_bpb

    rows = []

    def add(label, nbytes, decoded, extra=None):
        t = time.perf_counter()
        bpb = score(decoded)
        row = {
            "variant": label,
            "bytes": nbytes,
            "weight_err": weighted_error(
                {n: Q.rel_sq_error(tensors[n], decoded[n]) for n in tensors}, tensors
            ),
            "heldout_out_err": output_error(tensors, decoded, h_val, cfg),
            "val_bpb": bpb,
            "eval_s": round(time.perf_counter() - t, 1),
            **(extra or {}),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    add("checkpoint (fp)", 0, {k: v.float() for k, v in tensors.items()})
    nbytes, decoded = plain_pack(tensors, cfg)
    add("plain int6/int8 + zstd-22", nbytes, decoded)

    lo, hi = (int(x) for x in args.calib.split(","))
    quantizers, calib_s = {"clip": None}, {}
    for n in (lo, hi):
        t = time.perf_counter()
        hs = gptq.calibrate(tensors, run.model, dataclasses.replace(cfg, gptq_samples=n))
        quantizers[f"gptq{n}"] = gptq.make_quantizer(hs, cfg)
        calib_s[f"gptq{n}"] = round(time.perf_counter() - t, 1)
        print(f"calibration samples:{n} seconds:{calib_s[f'gptq{n}']}", flush=True)

    variants = VARIANTS
    if args.variants:
        variants = [
            (b, float(p), q) for b, p, q in (v.split(":") for v in args.variants.split(","))
        ]
    for bits, prune, qname in variants:
        qname = qname.format(lo=lo, hi=hi)
        t = time.perf_counter()
        res = pack_state(
            tensors,
            model={},
            tokenizer=tok,
            cfg=cfg,
            setting=parse_bits(bits),
            prune_fraction=prune,
            quantizer=quantizers[qname],
            progress=False,
        )
        pack_s = round(time.perf_counter() - t, 1)
        add(
            f"{bits} prune {prune} {qname}",
            len(res.data),
            load_artifact(res.data).state,
            {"pack_s": pack_s, "calibration_s": calib_s.get(qname, 0.0)},
        )

    if not args.no_search:
        code = code_bytes_for(cfg)
        for qname in ("clip", f"gptq{hi}"):
            # The grid of this pgolf version, not the one saved with the checkpoint.
            scfg = dataclasses.replace(cfg, search=True, search_bits=PackConfig().search_bits)
            q = quantizers[qname]

            def pack_fn(setting, prune, q=q, scfg=scfg):
                return pack_state(
                    tensors,
                    model={},
                    tokenizer=tok,
                    cfg=scfg,
                    setting=setting,
                    prune_fraction=prune,
                    quantizer=q,
                    progress=False,
                )

            result, row, table_rows = B.search(tensors, scfg, code, pack_fn)
            print(B.format_table(table_rows), flush=True)
            add(
                f"budget search ({qname}) -> {row.bits} prune {row.prune}",
                len(result.data),
                load_artifact(result.data).state,
                {"code_bytes": code, "total_bytes": len(result.data) + code},
            )

    base = rows[1]
    print(
        f"\n{'variant':<46} {'bytes':>12} {'vs plain':>9} {'w_err':>9} {'out_err':>9} "
        f"{'val_bpb':>8} {'d_bpb':>8}"
    )
    for r in rows:
        rel = f"{r['bytes'] / base['bytes'] - 1:+.2%}" if r["bytes"] else "-"
        print(
            f"{r['variant']:<46} {r['bytes']:>12,} {rel:>9} {r['weight_err']:>9.2e} "
            f"{r['heldout_out_err']:>9.2e} {r['val_bpb']:>8.4f} "
            f"{r['val_bpb'] - rows[0]['val_bpb']:>+8.4f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"calibration_s": calib_s, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
