#!/usr/bin/env python3
"""Training speed of a preset's model (default: `default`) on one GPU, per attention backend.

    python3 bench/train_speed.py                       # all backends, record batch
    python3 bench/train_speed.py --backends sdpa --micro 48 --steps 8

1. Numerical agreement: forward output and q/k/v grads of every available attention
   backend on random bf16 inputs (B=4, T=2048, 8/4 heads, d=64) against an fp32 math
   reference, as relative L2 errors.
2. Timing: the `default` model, seq 2048, compiled (fullgraph), bf16 autocast, the
   trainer's exact optimizer step (Muon with compiled batched Newton-Schulz + fused AdamW
   + clipping) at the record global batch of 786,432 tokens via accumulation; a few
   warmup steps, then timed steps. Reports tokens/s, step ms, MFU (vs 989 TFLOP/s dense
   bf16) and peak memory as key:value lines and one JSON summary line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pgolf.config import resolve  # noqa: E402
from pgolf.logs import format_line  # noqa: E402
from pgolf.model import (  # noqa: E402
    GPT,
    attend,
    available_backends,
    param_groups,
    resolve_backend,
    train_flops_per_token,
)
from pgolf.runtime import set_mix_order_reduction  # noqa: E402
from pgolf.train.fp8 import fp8_linear  # noqa: E402
from pgolf.train.loop import H100_BF16_PEAK_FLOPS  # noqa: E402
from pgolf.train.muon import Muon  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


def agreement(backends: list[str]) -> dict[str, dict]:
    g = torch.Generator(device="cuda").manual_seed(0)
    shape_q, shape_kv = (4, 2048, 8, 64), (4, 2048, 4, 64)
    q = torch.randn(shape_q, device="cuda", generator=g, dtype=torch.bfloat16)
    k = torch.randn(shape_kv, device="cuda", generator=g, dtype=torch.bfloat16)
    v = torch.randn(shape_kv, device="cuda", generator=g, dtype=torch.bfloat16)
    dy = torch.randn(shape_q, device="cuda", generator=g, dtype=torch.bfloat16)

    def run(name: str, dtype: torch.dtype):
        # Fresh leaves per run: .to(same dtype) returns the same tensor, and its .grad would
        # accumulate across backends.
        qq, kk, vv = (t.detach().to(dtype).clone().requires_grad_(True) for t in (q, k, v))
        out = attend(qq, kk, vv, name)
        out.backward(dy.to(dtype))
        return out.detach(), qq.grad, kk.grad, vv.grad

    ref = run("math", torch.float32)
    results = {}
    for name in backends:
        try:
            resolve_backend(name, "cuda")  # registers FA4's custom ops when it is chosen
            got = run(name, torch.bfloat16)
            errs = [rel(a, b) for a, b in zip(got, ref, strict=True)]
            results[name] = dict(zip(("out", "dq", "dk", "dv"), errs, strict=True))
            results[name]["ok"] = max(errs) < 2e-2
        except Exception as e:  # a backend that cannot run here is a result, not a crash
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        print(format_line({"agree_backend": name, **results[name]}), flush=True)
    return results


def mlp_agreement(tokens: int, dim: int, hidden: int) -> dict:
    """The fused relu² MLP (``model.mlp_kernel=quack``) and the torch MLP, both in bf16, against
    an fp32 reference: output and x/w1/w2 gradients as relative L2 errors."""
    from pgolf.model import quack_mlp

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(tokens, dim, device="cuda", generator=g)
    w1 = torch.randn(hidden, dim, device="cuda", generator=g) / dim**0.5
    w2 = torch.randn(dim, hidden, device="cuda", generator=g) / hidden**0.5
    dy = torch.randn(tokens, dim, device="cuda", generator=g)

    def run(fn, dtype):
        leaves = [t.detach().to(dtype).clone().requires_grad_(True) for t in (x, w1, w2)]
        out = fn(*leaves)
        out.backward(dy.to(dtype))
        return [out.detach()] + [t.grad for t in leaves]

    def plain(a, b, c):
        return quack_mlp.reference_forward(a, b, c)[0]

    ref = run(plain, torch.float32)
    results = {}
    for name, fn in (("torch", plain), ("quack", quack_mlp.fused_relu2_mlp)):
        try:
            errs = [rel(a, b) for a, b in zip(run(fn, torch.bfloat16), ref, strict=True)]
            results[name] = dict(zip(("out", "dx", "dw1", "dw2"), errs, strict=True))
        except Exception as e:
            results[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print(format_line({"agree_mlp": name, **results[name]}), flush=True)
    return results


def profile_step(step, name: str, dump_dir: str | None) -> None:
    """Top CUDA kernels of one optimizer step (full names), optionally with their sources."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    events.sort(key=lambda e: e.self_device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in events)
    print(f"profile_backend:{name} cuda_ms_per_step:{total / 1000:.1f}", flush=True)
    for e in events[:25]:
        print(
            f"kernel_ms:{e.self_device_time_total / 1000:8.2f} share:{e.self_device_time_total / total:6.1%}"
            f" calls:{e.count:5d} name:{e.key}",
            flush=True,
        )
    if dump_dir:
        dump_kernel_sources([e.key for e in events[:25] if e.key.startswith("triton_")], dump_dir)


def dump_kernel_sources(names: list[str], dump_dir: str) -> None:
    """Copy the Inductor-generated source of each named Triton kernel into ``dump_dir``."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    out = Path(dump_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(names)
    for path in Path(cache_dir()).rglob("*.py"):
        text = path.read_text(errors="replace")
        for n in list(wanted):
            if f"def {n}(" in text:
                (out / f"{n[:120]}.py").write_text(text)
                wanted.discard(n)
    print(f"kernel_sources_dumped:{len(names) - len(wanted)} missing:{len(wanted)}", flush=True)


def time_backend(name: str, args) -> dict:
    cfg = resolve(args.preset, args.overrides)
    mcfg = dataclasses.replace(cfg.model, attention_backend=name)
    tc = dataclasses.replace(cfg.train, micro_batch_seqs=args.micro)
    set_mix_order_reduction(tc.inductor_mix_order_reduction)  # as the trainer does
    accum = tc.accumulation(1)
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = GPT(mcfg).cuda()
    model.set_recurrence(mcfg.recurrence)  # the steady state after recur_after_frac
    if tc.fp8_matmuls:  # as the trainer does
        model.set_block_matmul(fp8_linear)
    fwd = model.compiled(tc.compile_scope, args.compile_mode) if args.compile else model
    groups = param_groups(model)
    muon = Muon(
        groups["matrix"],
        lr=tc.matrix_lr,
        weight_decay=tc.muon_weight_decay,
        nesterov=True,
        ns_steps=tc.muon_ns_steps,
        ns_coeffs=tc.muon_ns_coeffs,
        row_eq=tc.muon_row_eq,
        compile=args.compile,
    )
    adam = torch.optim.AdamW(
        [
            {"params": [p for _, p in groups["embedding"]], "lr": tc.embed_lr},
            {"params": [p for _, p in groups["control"]], "lr": tc.control_lr},
        ],
        betas=(0.9, 0.95),
        weight_decay=0.04,
        fused=True,
    )
    params = list(model.parameters())
    x = torch.randint(0, mcfg.vocab_size, (accum, tc.micro_batch_seqs, tc.seq_len), device="cuda")
    y = torch.roll(x, -1, dims=-1)

    def step() -> torch.Tensor:
        total = torch.zeros((), device="cuda")
        for a in range(accum):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fwd(x[a], y[a])
            (loss / accum).backward()
            total += loss.detach()
        torch.nn.utils.clip_grad_norm_(params, tc.grad_clip, foreach=True)
        adam.step()
        muon.step(1.0, 0.95)
        adam.zero_grad(set_to_none=True)
        for p in muon.params.values():
            p.grad = None
        return total

    # The warm-up compiles what the trainer's does: the plain block order from step 0, the
    # recurrent one from warmup//4, the QAT graphs from warmup//2 (when QAT is on).
    t0 = time.perf_counter()
    for i in range(args.warmup):
        model.set_recurrence(mcfg.recurrence and i >= args.warmup // 4)
        model.set_qat(tc.qat_bits if tc.qat_lr_threshold > 0 and i >= args.warmup // 2 else 0)
        step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    model.set_qat(0)
    model.set_recurrence(mcfg.recurrence)
    times = []
    for _ in range(args.steps):  # one sync per ~0.6-s step costs nothing measurable
        t0 = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    if args.profile:
        profile_step(step, name, args.dump_kernels)
    tok_s = tc.global_batch_tokens / dt
    result = {
        "backend": name,
        "micro_batch_seqs": tc.micro_batch_seqs,
        "accumulation": accum,
        "tokens_per_s": tok_s,
        "step_ms": 1000 * dt,  # median over the timed steps
        "step_ms_min_max": f"{1000 * min(times):.1f}/{1000 * max(times):.1f}",
        "mfu": tok_s * train_flops_per_token(model, tc.seq_len) / H100_BF16_PEAK_FLOPS,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "warmup_s": compile_s,
        "loss": float(loss.item() / accum),
    }
    print(format_line(result), flush=True)
    torch.cuda.empty_cache()
    return result


def set_inductor_option(item: str) -> None:
    import ast

    import torch._inductor.config as inductor_config

    key, _, value = item.partition("=")
    *path, leaf = key.split(".")
    target = inductor_config
    for part in path:
        target = getattr(target, part)
    if not hasattr(target, leaf):
        sys.exit(f"--inductor {item}: torch._inductor.config has no {key}")
    setattr(target, leaf, ast.literal_eval(value))
    print(f"inductor_{key}:{getattr(target, leaf)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="", help="comma list (default: all available but math)")
    ap.add_argument("--preset", default="default", help="config preset (default, record)")
    ap.add_argument("--micro", type=int, default=24, help="sequences per micro-batch")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    ap.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one step")
    ap.add_argument(
        "--dump-kernels", metavar="DIR", help="with --profile: save top kernels' source"
    )
    ap.add_argument(
        "--inductor",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set torch._inductor.config.KEY (dotted, Python literal value), e.g. "
        "triton.mix_order_reduction=False",
    )
    ap.add_argument(
        "--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune-no-cudagraphs)"
    )
    ap.add_argument(
        "--quack-tuned",
        action="store_true",
        help="with model.mlp_kernel=quack: quack's autotuned GEMM configs, not its heuristics",
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/train_speed.py needs a CUDA GPU")
    for item in args.inductor:
        set_inductor_option(item)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    info = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "available": ",".join(available_backends("cuda")),
    }
    print(format_line(info), flush=True)
    summary: dict = {"info": info}
    cfg = resolve(args.preset, args.overrides)
    if cfg.model.mlp_kernel == "quack":
        from pgolf.model import quack_mlp

        quack_mlp.TUNED = args.quack_tuned
    if not args.skip_agreement:
        summary["agreement"] = agreement(available_backends("cuda"))
        if cfg.model.mlp_kernel == "quack":
            tokens = args.micro * cfg.train.seq_len
            summary["mlp_agreement"] = mlp_agreement(
                tokens, cfg.model.model_dim, cfg.model.mlp_hidden
            )
    names = (
        args.backends.split(",")
        if args.backends
        else [b for b in available_backends("cuda") if b != "math"]
    )
    summary["timing"] = []
    for name in names:
        try:
            summary["timing"].append(time_backend(name, args))
        except Exception as e:
            err = f"{type(e).__name__}: {e}"[:500]
            print(format_line({"backend": name, "error": err}), flush=True)
            summary["timing"].append({"backend": name, "error": err})
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
    print("summary_json " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
