"""Packer benchmark: bytes vs the plain recipe, codec table, pack/unpack wall times.

    python bench/pack_bench.py RUN_DIR            # a trained checkpoint (the real figure)
    python bench/pack_bench.py --random default   # random weights of the default shape
    python bench/pack_bench.py --random default --codecs   # + the entropy-coder table (slow)
    python bench/pack_bench.py --random default --timing-only --set pack.gptq=on  # phases

Errors are the parameter-weighted mean of per-tensor relative squared errors
||W - W_hat||^2 / ||W||^2 (the same proxy `pgolf inspect` and the budget search use).
"""

from __future__ import annotations

import argparse
import dataclasses
import lzma
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pgolf.checkpoint import load_checkpoint, save_checkpoint
from pgolf.config import resolve
from pgolf.format import codecs, load_artifact, rans
from pgolf.pack import quantize as Q
from pgolf.pack.packer import encode_tensors, pack_state, weighted_error
from pgolf.pack.plain import plain_pack
from pgolf.pack.synthetic import random_state

TOK = {"vocab_size": 0, "sha256": None}


def timed_cli(args: list[str]) -> tuple[float, float, str]:
    """(wall s, child CPU s, stdout) of one pgolf command, Python start-up included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "pgolf.cli", *args], check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, res.stdout


def error_of(tensors, decoded) -> float:
    errs = {n: Q.rel_sq_error(tensors[n], decoded[n]) for n in tensors}
    return weighted_error(errs, tensors)


def comparison(tensors, cfg) -> list[tuple[str, int, float]]:
    rows = []
    plain_bytes, plain_dec = plain_pack(tensors, cfg)
    rows.append(
        (
            "plain: int6 blocks/int8 emb/fp16 rest, zstd-22 whole",
            plain_bytes,
            error_of(tensors, plain_dec),
        )
    )
    variants = [
        (
            "same bits 8/6/6, amax scales, rANS/zstd per tensor",
            dict(clip_search=False, other_bits=8),
            (8, 6, 6),
        ),
        ("same bits 8/6/6, clip search, rANS/zstd per tensor", dict(other_bits=8), (8, 6, 6)),
        ("default recipe 8/6/5 (int5 MLP), clip search", {}, (8, 6, 5)),
        ("8/5/5, clip search", {}, (8, 5, 5)),
    ]
    for label, kw, setting in variants:
        c = dataclasses.replace(cfg, search=False, **kw)
        res = pack_state(tensors, model={}, tokenizer=TOK, cfg=c, setting=setting)
        art = load_artifact(res.data)
        rows.append((label, len(res.data), error_of(tensors, art.state)))
    return rows


def codec_table(tensors, cfg, setting=(8, 6, 6)) -> list[tuple[str, int, float]]:
    """Bytes of the integer value streams (scales excluded) under each coder, with times."""
    enc, classes = encode_tensors(
        tensors, dataclasses.replace(cfg, clip_search=False), setting=setting
    )
    streams = [t.values for t in enc if t.scales is not None]
    whole = b"".join(streams)
    out = []

    def run(label, fn):
        t = time.perf_counter()
        n = fn()
        out.append((label, n, time.perf_counter() - t))

    ent = sum(
        rans.entropy_bytes(np.bincount(np.frombuffer(s, np.uint8), minlength=256)) for s in streams
    )
    out.append(("order-0 entropy bound, per tensor", int(ent), 0.0))
    run("zstd-22, whole state", lambda: len(codecs.compress("zstd", whole)))
    for c in ("zstd", "brotli", "lzma"):
        run(f"{c}, per tensor", lambda c=c: sum(len(codecs.compress(c, s)) for s in streams))
    run(
        "lzma lc0/lp0/pb0 (no literal context), per tensor",
        lambda: sum(
            len(
                lzma.compress(
                    s,
                    format=lzma.FORMAT_RAW,
                    filters=[{"id": lzma.FILTER_LZMA2, "preset": 9, "lc": 0, "lp": 0, "pb": 0}],
                )
            )
            for s in streams
        ),
    )
    run(
        "bit-plane shuffle + zstd-22, per tensor",
        lambda: sum(
            len(
                codecs.compress(
                    "zstd",
                    np.packbits(
                        np.unpackbits(np.frombuffer(s, np.uint8)).reshape(-1, 8).T
                    ).tobytes(),
                )
            )
            for s in streams
        ),
    )
    run(
        "rANS, one histogram per tensor",
        lambda: sum(map(len, rans.encode_many([np.frombuffer(s, np.uint8) for s in streams]))),
    )
    by_class: dict[str, list[bytes]] = {}
    for t in enc:
        if t.scales is not None:
            by_class.setdefault(f"{classes[t.name]}{t.scheme}", []).append(t.values)
    run(
        "rANS, one histogram per tensor class",
        lambda: sum(
            map(
                len,
                rans.encode_many([np.frombuffer(b"".join(v), np.uint8) for v in by_class.values()]),
            )
        ),
    )
    run(
        "rANS, one histogram for everything",
        lambda: len(rans.encode(np.frombuffer(whole, np.uint8))),
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("--random", metavar="PRESET", help="benchmark random weights of a preset")
    ap.add_argument("--codecs", action="store_true", help="also print the entropy-coder table")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--timing-only", action="store_true", help="only the timed pack/unpack")
    ap.add_argument(
        "--set", action="append", default=[], help="pass '--set KEY=VALUE' to the timed pack"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pack_bench_"))
    if args.random:
        run = resolve(args.random)
        ckpt = tmp / "ckpt"
        save_checkpoint(ckpt, random_state(run.model), run)
    else:
        ckpt = Path(args.checkpoint)
    tensors, run, _ = load_checkpoint(ckpt)
    cfg = run.pack
    print(
        f"checkpoint:{ckpt} params:{sum(t.numel() for t in tensors.values())} "
        f"cpus:{os.cpu_count()} load_avg_1m:{os.getloadavg()[0]:.1f} torch:{torch.__version__}"
    )
    rows = [] if args.timing_only else comparison(tensors, cfg)
    if rows:
        base = rows[0][1]
        print(f"\n{'recipe':<58} {'bytes':>12} {'vs plain':>9} {'mean_rel_err':>13}")
        for label, n, err in rows:
            print(f"{label:<58} {n:>12,} {n / base - 1:>+9.2%} {err:>13.3e}")
    if args.codecs and not args.timing_only:
        table = codec_table(tensors, cfg)
        ref = table[1][1]
        print(
            f"\n{'coder (int value streams, 8/6/6 amax)':<58} {'bytes':>12} {'vs zstd':>9} "
            f"{'seconds':>8}"
        )
        for label, n, sec in table:
            print(f"{label:<58} {n:>12,} {n / ref - 1:>+9.2%} {sec:>8.1f}")
    if not args.skip_timing:
        art = tmp / "a.pgolf"
        sets = [x for kv in args.set for x in ("--set", kv)]
        wall, cpu, out = timed_cli(["pack", str(ckpt), "-o", str(art), "--no-progress", *sets])
        print(f"\npack_wall_s:{wall:.1f} pack_cpu_s:{cpu:.1f} artifact_bytes:{art.stat().st_size}")
        print("\n".join(line for line in out.splitlines() if line.startswith("pack_phase")))
        wall, cpu, _ = timed_cli(["unpack", str(art), "-o", str(tmp / "un")])
        print(f"unpack_wall_s:{wall:.1f} unpack_cpu_s:{cpu:.1f}")


if __name__ == "__main__":
    main()
