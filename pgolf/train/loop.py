"""The training loop: setup, compile warmup, wall-clock schedule, averaging, checkpoints.

``train()`` is the whole run for one process (rank); torchrun starts one per GPU. The
training clock counts only optimizer steps: compile warmup, validation and checkpoint
writes pause it (as in the public records), so ``train_seconds`` is time spent learning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from pgolf import runtime
from pgolf.checkpoint import CHECKPOINT_FILE, CONFIG_FILE, save_checkpoint
from pgolf.config import RunConfig
from pgolf.data.bpb import ByteTable
from pgolf.data.shards import load_split
from pgolf.data.tokenizer import tokenizer_identity
from pgolf.errors import ConfigError, DataError, PgolfError
from pgolf.logs import Logger
from pgolf.model import GPT, param_groups, train_flops_per_token
from pgolf.train.averaging import EMA, SWA, averaged_weights
from pgolf.train.fp8 import check_fp8_support, fp8_linear, plain_matmuls
from pgolf.train.loader import BatchPlan, Prefetcher, train_stream
from pgolf.train.muon import Muon, momentum_at
from pgolf.train.plots import plot_loss_curve
from pgolf.train.schedule import Schedule
from pgolf.train.state import (
    RESUME_FILE,
    RESUME_JSON,
    adam_state_tensors,
    load_adam_state,
    load_resume,
    save_resume,
)
from pgolf.train.validate import evaluate_bpb

# Dense bf16 peak of one H100 SXM (no sparsity); MFU is reported against it.
H100_BF16_PEAK_FLOPS = 989e12
LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss_curve.png"
# Everything a run writes into its run dir: a fresh run refuses a folder holding any of them.
RUN_FILES = (CHECKPOINT_FILE, CONFIG_FILE, RESUME_FILE, RESUME_JSON, LOG_FILE, PLOT_FILE)


class TrainingDiverged(PgolfError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


def align_with_tokenizer(cfg: RunConfig, tok: dict[str, Any], log: Logger) -> RunConfig:
    """The tokenizer decides vocab_size and bos_id; a differing preset value is logged."""
    updates = {}
    if tok["vocab_size"] != cfg.model.vocab_size:
        updates["vocab_size"] = tok["vocab_size"]
    if tok["bos_id"] < 0:
        raise DataError(f"{tok['path']}: tokenizer has no BOS token; documents need [BOS]")
    if tok["bos_id"] != cfg.model.bos_id:
        updates["bos_id"] = tok["bos_id"]
    for key, value in updates.items():
        log.log(
            "config_from_tokenizer",
            key=f"model.{key}",
            preset=getattr(cfg.model, key),
            tokenizer=value,
        )
    if not updates:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **updates))


def check_val_split(val: Any, data_dir: Path, tc: Any) -> None:
    """The val split must fill one sequence, or validation fails after the whole clock."""
    if len(val) < tc.seq_len + 1:
        raise DataError(
            f"{data_dir}: val split has {len(val)} tokens, fewer than one validation sequence "
            f"needs (train.seq_len {tc.seq_len} + 1); rebuild the data with more val documents "
            "(pgolf data build --val-docs) or lower train.seq_len"
        )


class Trainer:
    def __init__(self, cfg: RunConfig, data_dir: Path, tokenizer: Path, out: Path) -> None:
        # Checks that need no model come first: bad data must fail before anything is written.
        self.tok = tokenizer_identity(tokenizer)
        self.val_tokens = load_split(data_dir, "val", self.tok["vocab_size"])
        check_val_split(self.val_tokens, data_dir, cfg.train)
        self.stream = train_stream(data_dir, self.tok["vocab_size"])
        self.dist = runtime.init(cfg.train.device)
        try:
            self.accum = cfg.train.accumulation(self.dist.world_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.out = Path(out)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.log = Logger(self.out / LOG_FILE, enabled=self.dist.is_main)
        self.cfg = cfg = align_with_tokenizer(cfg, self.tok, self.log)
        tc, d = cfg.train, self.dist
        self.device = d.device
        self.cuda = d.device.type == "cuda"
        self.schedule = Schedule(
            tc.train_seconds - tc.pack_reserve_seconds,
            tc.max_steps,
            tc.warmdown_frac,
            tc.lr_warmup_steps,
            tc.min_lr_frac,
        )
        torch.manual_seed(tc.seed)
        with d.device:  # orthogonal init on the GPU: seconds faster than on the host
            self.model = GPT(cfg.model)
        self.plan = BatchPlan(
            self.stream,
            global_tokens=tc.global_batch_tokens,
            micro_seqs=tc.micro_batch_seqs,
            seq_len=tc.seq_len,
            rank=d.rank,
            world=d.world_size,
            accum=self.accum,
        )
        self.byte_tables = ByteTable.from_model(tokenizer).torch_tables(d.device)
        if tc.fp8_matmuls:
            check_fp8_support(d.device, tc.autocast_bf16, cfg.model.mlp_kernel)
            self.model.set_block_matmul(fp8_linear)
        compiled = self.cuda and tc.compile
        if compiled:
            runtime.set_mix_order_reduction(tc.inductor_mix_order_reduction)
        self.fwd = self.model.compiled(tc.compile_scope) if compiled else self.model
        if d.distributed:
            # RoPE tables are the only buffers and are identical everywhere: no broadcasts.
            # (torch 2.13 renames the flag; 2.11 on the GPU machines only knows this one.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.fwd = DDP(
                    self.fwd,
                    device_ids=[d.local_rank] if self.cuda else None,
                    broadcast_buffers=False,
                )
        self.compiled = compiled
        self.flops_per_token = train_flops_per_token(self.model, tc.seq_len)
        self._build_optimizers()
        self.ema = EMA(self.model, tc.ema_decay) if tc.averaging == "ema" else None
        self.swa = (
            SWA(self.model, tc.swa_every_steps, tc.swa_lr_threshold)
            if (tc.averaging == "swa")
            else None
        )
        self.step, self.elapsed, self.qat_on = 0, 0.0, False
        self.history: list[dict[str, float]] = []

    def _build_optimizers(self) -> None:
        tc, groups = self.cfg.train, param_groups(self.model)
        self.muon = Muon(
            groups["matrix"],
            lr=tc.matrix_lr,
            weight_decay=tc.muon_weight_decay,
            nesterov=tc.muon_nesterov,
            ns_steps=tc.muon_ns_steps,
            ns_coeffs=tc.muon_ns_coeffs,
            row_eq=tc.muon_row_eq,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            compile=self.compiled,
        )
        adam_groups = [
            {"params": [p for _, p in groups["embedding"]], "base_lr": tc.embed_lr},
            {"params": [p for _, p in groups["control"]], "base_lr": tc.control_lr},
        ]
        for g in adam_groups:
            g["lr"] = g["base_lr"]
        self.adam = torch.optim.AdamW(
            adam_groups,
            betas=(tc.adam_beta1, tc.adam_beta2),
            eps=tc.adam_eps,
            weight_decay=tc.adam_weight_decay,
            fused=self.cuda or None,
        )
        self.all_params = list(self.model.parameters())

    # ---- one optimizer step -------------------------------------------------------------

    def _train_step(self, batches, lr_scale: float, momentum: float) -> torch.Tensor:
        tc = self.cfg.train
        ctx = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.cuda and tc.autocast_bf16
            else contextlib.nullcontext()
        )
        total = torch.zeros((), device=self.device)
        for a, (x, y) in enumerate(batches):
            if isinstance(self.fwd, DDP):
                self.fwd.require_backward_grad_sync = a == len(batches) - 1
            with ctx:
                loss = self.fwd(x, y)
            (loss / len(batches)).backward()
            total += loss.detach()
        for g in self.adam.param_groups:
            g["lr"] = g["base_lr"] * lr_scale
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.all_params, tc.grad_clip, foreach=True)
        self.adam.step()
        self.muon.step(lr_scale, momentum)
        self.adam.zero_grad(set_to_none=True)
        for p in self.muon.params.values():
            p.grad = None
        return total / len(batches)

    def _momentum(self) -> float:
        tc = self.cfg.train
        return momentum_at(
            self.step, tc.muon_momentum_start, tc.muon_momentum, tc.muon_momentum_warmup_steps
        )

    # ---- compile warmup -----------------------------------------------------------------

    def warmup(self) -> None:
        """Compile every graph before the clock starts, then restore weights and optimizers."""
        n = self.cfg.train.compile_warmup_steps
        if not self.compiled or n == 0:
            return
        t0 = time.perf_counter()
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        batches = [(x.to(self.device), y.to(self.device)) for x, y in self.plan.micro_batches(0)]
        qat_from = n // 2 if self.cfg.train.qat_lr_threshold > 0 else n
        mc = self.cfg.model  # compile the plain and the recurrent graph (model.recur_*)
        recur_from = n // 4 if mc.recur_after_frac > 0 else 0
        for i in range(n):
            self.model.set_qat(self.cfg.train.qat_bits if i >= qat_from else 0)
            if mc.recurrence:  # without it the model never recurs
                self.model.set_recurrence(i >= recur_from)
            self._train_step(batches, 1.0, self._momentum())
        self.model.set_qat(0)
        self.model.load_state_dict(saved)
        self._build_optimizers()
        torch.cuda.synchronize()
        self.log.log("warmup", steps=n, warmup_s=time.perf_counter() - t0)

    # ---- checkpoints ---------------------------------------------------------------------

    def save(self, extra: dict[str, Any]) -> None:
        weights, kind = averaged_weights(self.model, self.ema, self.swa)
        if not self.dist.is_main:
            return
        save_checkpoint(
            self.out,
            weights,
            self.cfg,
            tokenizer=self.tok,
            extra={"step": self.step, "train_s": self.elapsed, "averaging": kind, **extra},
        )
        self.log.log("checkpoint", step=self.step, averaging=kind, path=str(self.out))

    # ---- validation ---------------------------------------------------------------------

    def validate(self, model: GPT, max_tokens: int) -> dict[str, float]:
        tc = self.cfg.train
        tokens = self.val_tokens[:max_tokens] if max_tokens else self.val_tokens
        # Scores come from the model the checkpoint describes: the FP8 matmuls (set only with
        # train.fp8_matmuls) are taken out while validating.
        with plain_matmuls(model) if tc.fp8_matmuls else contextlib.nullcontext():
            return evaluate_bpb(model, tokens, self.byte_tables, tc, self.dist)

    # ---- main loop ----------------------------------------------------------------------

    def _sync_status(self, loss: torch.Tensor, elapsed: float) -> tuple[float, float, bool]:
        """Mean loss over ranks, max elapsed over ranks (all ranks stop together), finite?"""
        if not self.dist.distributed:
            loss_v = loss.item()
            return loss_v, elapsed, math.isfinite(loss_v)
        finite = torch.isfinite(loss)
        total = torch.where(finite, loss.float(), 0.0).reshape(1)
        # [max elapsed, any rank non-finite]
        flags = torch.stack([torch.tensor(elapsed, device=self.device), (~finite).float()])
        dist.all_reduce(total)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        elapsed_v, bad = flags.tolist()
        return total.item() / self.dist.world_size, elapsed_v, bad == 0

    def run(self, stop_after_step: int | None = None) -> dict[str, Any]:
        tc, d = self.cfg.train, self.dist
        self.log.log(
            "run",
            preset=self.cfg.preset,
            world_size=d.world_size,
            device=str(d.device),
            accumulation=self.accum,
            micro_batch_seqs=tc.micro_batch_seqs,
            seq_len=tc.seq_len,
            global_batch_tokens=tc.global_batch_tokens,
            params=sum(p.numel() for p in self.model.parameters()),
            train_tokens=self.stream.total,
            val_tokens=len(self.val_tokens),
            compiled=self.compiled,
            averaging=tc.averaging,
            **self.model.kernels(d.device.type),
        )
        prefetch = Prefetcher(self.plan, self.step, self.device)
        window_t, window_steps = time.perf_counter(), 0
        try:
            while not self.schedule.done(self.step, self.elapsed):
                t_start = time.perf_counter()
                scale = self.schedule.lr_scale(self.step, self.elapsed)
                if tc.qat_lr_threshold and not self.qat_on and scale < tc.qat_lr_threshold:
                    self.qat_on = True
                    self.model.set_qat(tc.qat_bits)
                    self.log.log("qat_on", step=self.step, lr_scale=scale, bits=tc.qat_bits)
                self._set_recurrence()
                loss = self._train_step(prefetch.next(), scale, self._momentum())
                self.step += 1
                if tc.averaging == "ema":
                    self.ema.update(self.model, self.step)
                elif tc.averaging == "swa":
                    self.swa.maybe_update(self.model, self.step, scale)
                if self.cuda:
                    # The step's kernels are still queued: without this wait the clock
                    # counted only the CPU's launch time (an H100 run measured 269 s on the
                    # clock for 414 s of real steps). The loss read below waits anyway.
                    torch.cuda.synchronize(self.device)
                local = self.elapsed + time.perf_counter() - t_start
                loss_v, self.elapsed, ok = self._sync_status(loss, local)
                window_steps += 1
                if not ok:
                    raise TrainingDiverged(
                        f"loss became non-finite at step {self.step} (lr scale {scale:.3f}); "
                        f"the last good checkpoint in {self.out} is kept. Lower the learning "
                        "rates (train.matrix_lr / embed_lr) or train.grad_clip and rerun."
                    )
                self.history.append({"step": self.step, "train_loss": loss_v})
                if self.step % tc.log_every_steps == 0 or self.schedule.done(
                    self.step, self.elapsed
                ):
                    dt = time.perf_counter() - window_t
                    self._log_train(loss_v, scale, dt, window_steps)
                    window_t, window_steps = time.perf_counter(), 0
                paused = time.perf_counter()
                if tc.val_every_steps and self.step % tc.val_every_steps == 0:
                    res = self.validate(self.model, tc.val_tokens)
                    self.history.append({"step": self.step, "val_bpb": res["val_bpb"]})
                    self.log.log("val", step=self.step, **res)
                self._periodic_checkpoint()
                if stop_after_step is not None and self.step >= stop_after_step:
                    return {"stopped_at": self.step}
                window_t += time.perf_counter() - paused
        finally:
            prefetch.close()
        return self.finish()

    def _set_recurrence(self) -> None:
        """Depth recurrence runs from model.recur_after_frac of the budget on (PR #1493)."""
        mc = self.cfg.model
        if not mc.recurrence:
            return
        frac = self.schedule.progress(self.step, self.elapsed)
        on = frac >= mc.recur_after_frac
        if on != self.model.recurrence_active:
            self.model.set_recurrence(on)
            self.log.log("recurrence", step=self.step, frac=frac, active=on)

    def _log_train(self, loss, scale, dt, steps) -> None:
        tok_s = self.cfg.train.global_batch_tokens * steps / max(dt, 1e-9)
        peak = self.dist.world_size * H100_BF16_PEAK_FLOPS
        mem = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else 0.0
        budget = self.cfg.train.max_steps or "time"
        self.log.log(
            None,
            step=f"{self.step}/{budget}",
            train_loss=loss,
            lr_scale=scale,
            train_s=self.elapsed,
            tokens_per_s=tok_s,
            step_avg_ms=1000 * dt / steps,
            mfu=tok_s * self.flops_per_token / peak,
            peak_mem_gib=mem,
        )

    def finish(self) -> dict[str, Any]:
        tc = self.cfg.train
        weights, kind = averaged_weights(self.model, self.ema, self.swa)
        with self.device:
            final_model = GPT(self.cfg.model, init_weights=False)
        final_model.load_state_dict(weights)
        raw = self.validate(self.model, tc.final_val_tokens)
        avg = self.validate(final_model, tc.final_val_tokens)
        result = {
            "step": self.step,
            "train_s": self.elapsed,
            "averaging": kind,
            "val_bpb_raw": raw["val_bpb"],
            "val_bpb": avg["val_bpb"],
        }
        self.log.log("final", **result, val_loss=avg["val_loss"], val_tokens=avg["val_tokens"])
        self.history.append({"step": self.step, "val_bpb": avg["val_bpb"]})
        # (save() writes step, train_s and averaging too: the same values)
        self.save({"kind": "final", **result, "val_loss": avg["val_loss"]})
        self._plot()
        return result

    def _periodic_checkpoint(self) -> None:
        """Only ``pgolf train`` checkpoints as it goes (the exported script packs the end)."""

    def _plot(self) -> None:
        """The loss curve: only ``pgolf train`` draws it."""


class ResumableTrainer(Trainer):
    """The ``pgolf train`` run: periodic checkpoints with resume state, a loss-curve PNG.

    The exported script runs the plain ``Trainer`` (one checkpoint at the end, which it
    packs), so none of this is carried in its counted code.
    """

    def _periodic_checkpoint(self) -> None:
        every = self.cfg.train.checkpoint_every_steps
        if every and self.step % every == 0:
            self.save({"kind": "periodic"})

    def _plot(self) -> None:
        if self.dist.is_main:
            plot_loss_curve(self.history, self.out / PLOT_FILE)

    def save(self, extra: dict[str, Any]) -> None:
        """The checkpoint, then the resume state that continues from it."""
        tensors, meta = self.state_tensors()
        super().save(extra)
        if self.dist.is_main:
            save_resume(self.out, tensors, meta)

    @property
    def names(self) -> dict[int, str]:
        """Parameter id -> name: the keys of the AdamW state in the resume file."""
        return {id(p): n for n, p in self.model.named_parameters()}

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{n}": p for n, p in self.model.named_parameters()}
        tensors.update(self.muon.state_tensors())
        adam_t, adam_steps = adam_state_tensors(self.adam, self.names)
        tensors.update(adam_t)
        if self.ema is not None:
            tensors.update(self.ema.state_tensors())
        if self.swa is not None:
            tensors.update(self.swa.state_tensors())
        meta = {
            "step": self.step,
            "elapsed_s": self.elapsed,
            "qat_on": self.qat_on,
            "adam_steps": adam_steps,
            "swa_count": self.swa.count if self.swa else 0,
            "world_size": self.dist.world_size,
            "data": self.stream.fingerprint(),
            "history": self.history,
        }
        return tensors, meta

    def resume(self, run_dir: Path) -> None:
        tensors, meta = load_resume(run_dir)
        if meta["data"] != self.stream.fingerprint():
            raise DataError(
                f"{run_dir}: the train shards differ from the run's (names/sizes); resuming "
                "would change the data order. Point --data at the original shards."
            )
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(tensors[f"model.{n}"])
        self.muon.load_state_tensors(tensors)
        load_adam_state(self.adam, self.names, tensors, meta["adam_steps"])
        if self.ema is not None:
            self.ema.load_state_tensors(tensors)
        if self.swa is not None:
            self.swa.load_state_tensors(tensors, meta["swa_count"])
        self.step, self.elapsed = meta["step"], meta["elapsed_s"]
        self.qat_on = meta["qat_on"]
        self.model.set_qat(self.cfg.train.qat_bits if self.qat_on else 0)
        self.history = meta["history"]
        self.log.log("resumed", step=self.step, elapsed_s=self.elapsed, qat=self.qat_on)


def train(
    cfg: RunConfig,
    data_dir: str | Path,
    tokenizer: str | Path,
    out: str | Path,
    *,
    resume: bool = False,
    stop_after_step: int | None = None,
) -> dict[str, Any]:
    """One process's share of a run; ``resume`` continues from ``out``'s resume state.

    ``stop_after_step`` ends the run early without the final save (tests use it to
    simulate a killed run).
    """
    trainer = ResumableTrainer(cfg, Path(data_dir), Path(tokenizer), Path(out))
    try:
        trainer.warmup()
        if resume:
            trainer.resume(Path(out))
        return trainer.run(stop_after_step=stop_after_step)
    finally:
        trainer.log.close()
        runtime.shutdown()
