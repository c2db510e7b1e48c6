"""The three commands as functions: pack a checkpoint, unpack an artifact, inspect one.

Resolved config: the artifact's header carries it (``meta.config``) and a sidecar
``ARTIFACT.config.json`` repeats it next to the file for humans and tools.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

import pgolf
from pgolf.checkpoint import load_checkpoint, save_checkpoint
from pgolf.config import RunConfig, from_json
from pgolf.config.base import to_dict
from pgolf.config.pack import PackConfig, format_bits
from pgolf.errors import PgolfError
from pgolf.eval.load import read_container
from pgolf.format import read_header
from pgolf.format.reader import tokenizer_identity
from pgolf.io import atomic_write_bytes, atomic_write_text
from pgolf.logs import Logger
from pgolf.pack import budget as B
from pgolf.pack import report
from pgolf.pack.packer import PackResult, pack_state


def sidecar_path(artifact: str | Path) -> Path:
    return Path(f"{artifact}.config.json")


def code_bytes_for(cfg: PackConfig, run: RunConfig | None = None) -> int:
    """Counted code: the override, or the size of the train_gpt.py exported for ``run``."""
    if cfg.code_bytes >= 0:  # the exported script passes its own size: nothing to generate
        return cfg.code_bytes
    from pgolf.pack import codebytes

    return codebytes.measure(dataclasses.replace(run or RunConfig(), pack=cfg)).shipped_bytes


def tokenizer_for(info: dict[str, Any], run: RunConfig, path: str | Path | None) -> dict:
    if path is not None:
        return tokenizer_identity(path)
    tok = info.get("tokenizer") or {}
    return {
        "vocab_size": int(tok.get("vocab_size", run.model.vocab_size)),
        "sha256": tok.get("sha256"),
    }


def pack_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    cfg: PackConfig,
    *,
    tokenizer: str | Path | None = None,
    log: Logger | None = None,
    progress: bool = True,
    calibration: Calibration | Callable[[], Calibration | None] | None = None,
) -> dict[str, Any]:
    """Pack ``checkpoint`` into ``out`` under ``cfg.budget_bytes``; returns a summary dict.

    ``calibration``: GPTQ's, already made (``calibrate_on_ranks``: shared by the ranks of a
    multi-GPU run), or a function that makes it, called where this calibrates, so the CPU's
    size estimates overlap it as they overlap our own; None calibrates here when GPTQ is on."""
    log = log or Logger(enabled=False)
    clock = PhaseClock(log)
    tensors, run, info = load_checkpoint(checkpoint)
    run = dataclasses.replace(run, pack=cfg)
    tok = tokenizer_for(info, run, tokenizer)
    if tok["vocab_size"] != run.model.vocab_size:
        raise PgolfError(
            f"tokenizer vocab {tok['vocab_size']} != model vocab "
            f"{run.model.vocab_size}; pass the tokenizer the model was trained with"
        )
    clock.done("load")
    code = code_bytes_for(cfg, run)
    clock.done("code_bytes", code_bytes=code)
    pool = ThreadPoolExecutor(1)
    try:  # the CPU estimates the search's settings while the GPU calibrates
        estimated = pool.submit(_timed, B.estimate, tensors, cfg) if overlap(cfg) else None
        quantizer, calib_s = _gptq(tensors, run, cfg, log, clock, calibration)
        if estimated is not None:
            (rows, _), seconds = estimated.result()
            clock.add("estimate", seconds, settings=len(rows), overlapped=True)
    finally:
        pool.shutdown()
    meta = {
        "config": run.to_dict(),
        "code_bytes": code,
        "created_by": f"pgolf {pgolf_version()}",
        "calibration_s": round(calib_s, 3),
    }
    cache: dict = {}  # compressed streams shared by the packs of the search

    def pack_fn(setting, prune, awq=None) -> PackResult:
        bits = setting or (cfg.embed_bits, cfg.attn_bits, cfg.mlp_bits)
        m = dict(meta, bits=format_bits(bits), prune=prune)
        if awq is not None:
            m["awq_extra_bits_frac"] = awq
        res = pack_state(
            tensors,
            model=to_dict(run.model),
            tokenizer=tok,
            cfg=cfg,
            setting=setting,
            prune_fraction=prune,
            meta=m,
            quantizer=quantizer,
            progress=progress,
            cache=cache,
            awq_frac=awq,
        )
        clock.packs += 1
        for phase, seconds in res.phases.items():
            clock.add(phase, seconds, pack=clock.packs, bits=format_bits(bits), prune=prune)
        return res

    if cfg.search:
        if estimated is None:
            rows, _ = B.estimate(tensors, cfg, act=_act(quantizer, cfg))
            clock.done("estimate", settings=len(rows))
        try:
            result, row, rows = B.search(tensors, cfg, code, pack_fn, rows=rows)
        except B.BudgetError as e:
            log.log(f"search_table\n{B.format_table(e.rows)}")
            raise
        log.log(f"search_table\n{B.format_table(rows)}")
        setting = row.bits
    else:
        result = pack_fn(None, cfg.prune_fraction)
        setting = format_bits((cfg.embed_bits, cfg.attn_bits, cfg.mlp_bits))
        if len(result.data) + code > cfg.budget_bytes:
            raise B.BudgetError(
                f"artifact {len(result.data):,} + code {code:,} = {len(result.data) + code:,} "
                f"bytes exceeds the budget of {cfg.budget_bytes:,}; enable pack.search or use "
                "fewer bits / more pruning",
                [],
            )
    clock.mark()
    atomic_write_bytes(out, result.data)
    atomic_write_text(sidecar_path(out), run.to_json())
    clock.done("write")
    summary = {
        "artifact": str(out),
        "artifact_bytes": len(result.data),
        "code_bytes": code,
        "total_bytes": len(result.data) + code,
        "budget_bytes": cfg.budget_bytes,
        "bits_e_a_m": setting,
        "mean_rel_err": result.mean_error(tensors),
        "gptq": use_gptq(cfg),
        "calibration_s": round(calib_s, 3),
        "real_packs": clock.packs,
        "pack_s": round(clock.total(), 3),
    }
    log.log("pack", **summary)
    log.log("pack_phases", **{f"{k}_s": round(v, 3) for k, v in clock.totals.items()})
    summary["phases_s"] = {k: round(v, 3) for k, v in clock.totals.items()}
    return summary


class PhaseClock:
    """Wall time per pack phase, logged as ``pack_phase:NAME wall_s:X`` as each ends.

    Phases: load, code_bytes, calibrate_model, calibrate_generate, calibrate_hessians,
    estimate, quantize and code (once per real pack, ``pack:N``), write; ``totals`` sums
    repeated phases. GPU work is synchronized before a phase ends (gptq.calibrate).
    """

    def __init__(self, log: Logger) -> None:
        self.log = log
        self.start = self.last = time.perf_counter()
        self.totals: dict[str, float] = {}
        self.packs = 0

    def mark(self) -> None:
        """Start the next phase now (time since the last mark belongs to no phase)."""
        self.last = time.perf_counter()

    def done(self, phase: str, **fields: Any) -> float:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.add(phase, seconds, **fields)
        return seconds

    def add(self, phase: str, seconds: float, **fields: Any) -> None:
        self.totals[phase] = self.totals.get(phase, 0.0) + seconds
        self.log.log(None, pack_phase=phase, wall_s=round(seconds, 3), **fields)
        self.last = time.perf_counter()

    def total(self) -> float:
        return time.perf_counter() - self.start


def overlap(cfg: PackConfig) -> bool:
    """Estimate on a CPU thread during calibration: only when calibration runs on the GPU
    (on the CPU both would share the same cores) and AWQ-lite, which ranks matrices by the
    calibration's statistics, is off."""
    return cfg.search and use_gptq(cfg) and torch.cuda.is_available() and not _uses_awq(cfg)


def _uses_awq(cfg: PackConfig) -> bool:
    return cfg.awq_extra_bits_frac > 0 or any(f > 0 for f in cfg.search_awq)


def _act(quantizer, cfg: PackConfig):
    """AWQ-lite's input second moments from GPTQ's Hessians (None: weight-space salience)."""
    if quantizer is None or not _uses_awq(cfg):
        return None
    from pgolf.pack import awq

    return awq.act_stats(quantizer.hessians)


def _timed(fn, *args):
    t = time.perf_counter()
    return fn(*args), time.perf_counter() - t


def use_gptq(cfg: PackConfig) -> bool:
    return cfg.gptq == "on" or (cfg.gptq == "auto" and torch.cuda.is_available())


@dataclasses.dataclass(frozen=True)
class Calibration:
    """GPTQ's Hessians, made before the pack (by every rank of a multi-GPU run), and the
    wall seconds that took."""

    hessians: dict[str, torch.Tensor]
    seconds: float


def calibrate_on_ranks(
    checkpoint: str | Path, cfg: PackConfig, d, log: Logger | None = None
) -> Calibration | None:
    """GPTQ's calibration for ``checkpoint``, each rank of ``d`` generating its share of the
    text (call on every rank; the Hessians' sum reaches all). None when GPTQ is off."""
    if not use_gptq(cfg):
        return None
    from pgolf.pack import gptq

    t = time.perf_counter()
    tensors, run, _ = load_checkpoint(checkpoint)
    hessians = gptq.calibrate(tensors, run.model, cfg, d=d)
    seconds = time.perf_counter() - t
    (log or Logger(enabled=False)).log("calibration", ranks=d.world_size, calibration_s=seconds)
    return Calibration(hessians, seconds)


def _gptq(
    tensors,
    run: RunConfig,
    cfg: PackConfig,
    log: Logger,
    clock: PhaseClock | None = None,
    calibration: Calibration | Callable[[], Calibration | None] | None = None,
):
    if callable(calibration):  # first: the other ranks wait for this rank in it
        calibration = calibration()
    if not use_gptq(cfg):
        return None, 0.0
    from pgolf.pack import gptq

    if calibration is not None:  # made on every rank (calibrate_on_ranks)
        return gptq.make_quantizer(calibration.hessians, cfg), calibration.seconds
    t = time.perf_counter()
    times: dict[str, float] = {}
    hessians = gptq.calibrate(tensors, run.model, cfg, times=times)
    seconds = time.perf_counter() - t
    log.log(
        "calibration", samples=cfg.gptq_samples, seq_len=cfg.gptq_seq_len, calibration_s=seconds
    )
    if clock is not None:
        for phase, s in times.items():
            clock.add(f"calibrate_{phase}", s)
    return gptq.make_quantizer(hessians, cfg), seconds


def pgolf_version() -> str:
    return getattr(pgolf, "__version__", "0")


def unpack_artifact(artifact: str | Path, out_dir: str | Path) -> Path:
    """Dequantized checkpoint.safetensors + config.json (original dtypes) in ``out_dir``."""
    art, _ = read_container(artifact)  # the evaluator's checks, model config and shapes too
    config = art.header.meta.get("config")
    if isinstance(config, dict):
        run = from_json(config)
    else:  # an artifact written by another tool: rebuild from the model section alone
        run = from_json({"model": art.model})
    state = {n: t.to(art.dtypes[n]) for n, t in art.state.items()}
    return save_checkpoint(
        out_dir, state, run, tokenizer=dict(art.tokenizer), extra={"unpacked_from": str(artifact)}
    )


def inspect_artifact(
    artifact: str | Path, *, budget: int | None = None, code_bytes: int | None = None
) -> dict[str, Any]:
    header, size = read_header(artifact)
    read_container(artifact)  # full validation: a broken stream must fail inspect too
    if code_bytes is None and "code_bytes" in header.meta:
        code_bytes = int(header.meta["code_bytes"])
    elif code_bytes is None:  # written by another tool: count pgolf's script for its config
        config = header.meta.get("config")
        run = from_json(config) if isinstance(config, dict) else RunConfig()
        code_bytes = code_bytes_for(run.pack, run)
    if budget is None:
        budget = int(header.meta.get("config", {}).get("pack", {}).get("budget_bytes", 16_000_000))
    return report.summary(header, size, code_bytes, budget)


def state_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Parameter-weighted relative squared error between two state dicts (tests, bench)."""
    num = sum(float((a[n].float() - b[n].float()).square().sum()) for n in a)
    den = sum(float(a[n].float().square().sum()) for n in a)
    return num / den if den else 0.0
