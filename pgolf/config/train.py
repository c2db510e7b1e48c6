"""Train section: optimizer, schedule, averaging, QAT, batch and logging knobs.

Step-count knobs (momentum warmup, SWA interval, compile warmup) are in optimizer steps,
as in the public records; a later scaling rule for short 1-GPU runs rewrites them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from pgolf.config.base import need


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # Wall-clock training budget in seconds (compile/warmup, validation and checkpoint
    # writes excluded); the lr schedule reaches zero exactly there.
    train_seconds: float = 600.0
    # Seconds of train_seconds kept for the pack (calibration, GPTQ, coding): the schedule
    # ends this much earlier, so training + packing fit the challenge's clock as in records
    # (they reserve 5.5-8 s). The exported train_gpt.py packs right after training.
    pack_reserve_seconds: float = 0.0
    # Optimizer steps cap; 0 = none. When > 0 the schedule's progress is the larger of the
    # time and step fractions, so a short run with a huge train_seconds is deterministic.
    max_steps: int = 0
    # Tokens per sequence.
    seq_len: int = 2048
    # Tokens per optimizer step summed over all ranks and accumulation steps.
    global_batch_tokens: int = 786_432
    # Sequences per forward/backward on each rank; accumulation = global / (world*micro*seq).
    # 48 x 2048 measured 1.007M tok/s at 25.8 GiB peak on an H100 (24: 0.967M, 13.1 GiB).
    micro_batch_seqs: int = 48
    # Seed for init (data order is fixed by the shard order, so resume needs no RNG).
    seed: int = 1337
    # Muon learning rate for block matrices (and the extras' projections).
    matrix_lr: float = 0.025
    # AdamW learning rate for embedding tables (tok_emb, bigram.embed, value_embed.embed).
    embed_lr: float = 0.035
    # AdamW learning rate for control tensors (gains, scales, mixes, gates, skip weights).
    control_lr: float = 0.025
    # Muon momentum after warmup.
    muon_momentum: float = 0.99
    # Muon momentum at step 0; linear ramp to muon_momentum (early steps want less inertia).
    muon_momentum_start: float = 0.92
    # Steps of the momentum ramp.
    muon_momentum_warmup_steps: int = 1500
    # Newton-Schulz iterations of the orthogonalization.
    muon_ns_steps: int = 5
    # Newton-Schulz coefficients: "quintic" (Muon's fixed (3.4445, -4.775, 2.0315)) or
    # "polar_express" (a minimax-tuned tuple per iteration, closer to orthogonal in the same
    # steps; leaderboard PR #1787, from #1344).
    muon_ns_coeffs: Literal["quintic", "polar_express"] = "quintic"
    # MuonEq-R: scale each row of the update to unit norm before orthogonalization
    # (leaderboard PR #1394, from #1217).
    muon_row_eq: bool = False
    # Nesterov momentum in Muon.
    muon_nesterov: bool = True
    # Decoupled weight decay of Muon (p *= 1 - lr*wd per step).
    muon_weight_decay: float = 0.04
    # AdamW decoupled weight decay (embeddings and control tensors).
    adam_weight_decay: float = 0.04
    # AdamW betas.
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    # AdamW epsilon.
    adam_eps: float = 1e-8
    # Global gradient-norm clip; 0 disables.
    grad_clip: float = 0.3
    # Linear lr warmup in steps (0: none; Muon's momentum ramp already softens the start).
    lr_warmup_steps: int = 0
    # Fraction of the budget (time, or steps with max_steps) over which lr decays linearly
    # to 0: lr_scale = min(1, remaining / (warmdown_frac * budget)).
    warmdown_frac: float = 0.4
    # LR floor during the warmdown: lr_scale = max(min_lr_frac, linear decay) until the budget
    # ends (leaderboard PR #1787's MIN_LR, 0.10 in #1855). 0 = decay to zero.
    min_lr_frac: float = 0.0
    # Steps run before the clock starts to compile every graph (incl. the QAT one); the
    # weights and optimizer state are restored afterwards. Only when compiling.
    compile_warmup_steps: int = 6
    # Weight averaging whose result the checkpoint holds: "ema", "swa" or "none".
    averaging: Literal["ema", "swa", "none"] = "ema"
    # EMA decay per step (with a warmup: min(decay, (1+t)/(10+t)) at step t).
    ema_decay: float = 0.997
    # Tight SWA: snapshot every this many steps ...
    swa_every_steps: int = 50
    # ... once the lr scale is below this.
    swa_lr_threshold: float = 0.2
    # Late QAT: fake-quantize block matrices once the lr scale drops below this; 0 = never.
    qat_lr_threshold: float = 0.1
    # Bits of the QAT grid (the packer's int6 for block matrices).
    qat_bits: int = 6
    # torch.compile (fullgraph) the model and the Newton-Schulz step; ignored on CPU.
    compile: bool = True
    # What torch.compile covers: "model" (one whole-model graph per block order and QAT
    # state: the most fusion) or "blocks" (each block, the embedding and the head apart:
    # every layer and the recurrent order reuse one graph per distinct block structure).
    # H200, record, bench/compile_scope_ab.sh: blocks warms up in 68.9 s instead of 122.6 s
    # but steps 11.6 % slower (653,596 vs 739,125 tokens/s), so training keeps "model".
    # "nested": the whole-model graph with each block body a nested compile region, lowered
    # once per structure (CPU Inductor, record-tiny, both orders: compile 92.4 s -> 75.8 s,
    # blocks 42.5 s); not yet measured on a GPU.
    compile_scope: Literal["model", "blocks", "nested"] = "model"
    # Inductor's mix-order reductions fuse a row reduction (an RMSNorm backward) with the
    # column reductions of per-channel parameter grads. On the H100 (torch 2.11) one such
    # kernel took 4.9 ms per micro-step; with them off training ran 4.1% faster
    # (bench/train_speed.py, docs/BENCHMARKS.md section 3). True restores Inductor's default.
    inductor_mix_order_reduction: bool = False
    # FP8 (e4m3, row-wise scaled) forward and input-gradient GEMMs for the block matrices;
    # weight gradients, master weights and everything after training stay bf16/fp32.
    # Needs CUDA with FP8 tensor cores (compute capability >= 8.9) and autocast_bf16.
    fp8_matmuls: bool = False
    # bf16 autocast for matmuls; ignored on CPU (tests want fp32 exactness).
    autocast_bf16: bool = True
    # "auto" (cuda:LOCAL_RANK when available), "cpu" or "cuda".
    device: str = "auto"
    # Periodic validation every this many steps (0 = only at the end).
    val_every_steps: int = 250
    # Val tokens used by periodic validation (0 = the whole split).
    val_tokens: int = 4_194_304
    # Val tokens of the final validation on the averaged weights (0 = the whole split).
    final_val_tokens: int = 0
    # Sequences per validation forward on each rank.
    val_batch_seqs: int = 16
    # Log a train line every this many steps.
    log_every_steps: int = 10
    # Periodic checkpoint + resume state every this many steps (0 = final only).
    checkpoint_every_steps: int = 1000

    def __post_init__(self) -> None:
        need(
            0 < self.train_seconds < math.inf,
            f"train_seconds must be a finite number > 0, got {self.train_seconds}",
        )
        need(
            0 <= self.pack_reserve_seconds < self.train_seconds,
            f"pack_reserve_seconds must be in [0, train_seconds={self.train_seconds})",
        )
        need(self.max_steps >= 0, "max_steps must be >= 0 (0 = no step cap)")
        need(self.seq_len >= 2, f"seq_len must be >= 2, got {self.seq_len}")
        need(
            self.global_batch_tokens % self.seq_len == 0,
            f"global_batch_tokens {self.global_batch_tokens} must be a multiple of "
            f"seq_len {self.seq_len}",
        )
        need(self.micro_batch_seqs >= 1, "micro_batch_seqs must be >= 1")
        for name in ("matrix_lr", "embed_lr", "control_lr", "adam_eps", "ema_decay"):
            need(getattr(self, name) > 0, f"{name} must be > 0")
        for name in ("muon_momentum", "muon_momentum_start", "adam_beta1", "adam_beta2"):
            need(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1)")
        need(self.ema_decay < 1, "ema_decay must be < 1")
        need(self.muon_ns_steps >= 1, "muon_ns_steps must be >= 1")
        for name in ("muon_weight_decay", "adam_weight_decay", "grad_clip"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0")
        for name in ("muon_momentum_warmup_steps", "lr_warmup_steps", "compile_warmup_steps"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0")
        need(0 <= self.warmdown_frac <= 1, "warmdown_frac must be in [0, 1]")
        need(
            self.muon_ns_coeffs in ("quintic", "polar_express"),
            f"muon_ns_coeffs must be quintic or polar_express, got {self.muon_ns_coeffs!r}",
        )
        need(
            self.compile_scope in ("model", "blocks", "nested"),
            f"compile_scope must be model, blocks or nested, got {self.compile_scope!r}",
        )
        need(0 <= self.min_lr_frac < 1, "min_lr_frac must be in [0, 1) (0 = no floor)")
        # Both switch on when lr_scale drops below their threshold, which a floor at or above
        # it would silently prevent.
        need(
            not self.qat_lr_threshold or self.min_lr_frac < self.qat_lr_threshold,
            f"min_lr_frac {self.min_lr_frac} keeps lr_scale from ever reaching "
            f"qat_lr_threshold {self.qat_lr_threshold}; lower the floor or set "
            "train.qat_lr_threshold=0",
        )
        need(
            self.averaging != "swa" or self.min_lr_frac < self.swa_lr_threshold,
            f"min_lr_frac {self.min_lr_frac} keeps lr_scale from ever reaching "
            f"swa_lr_threshold {self.swa_lr_threshold}; lower the floor or raise the threshold",
        )
        need(self.swa_every_steps >= 1, "swa_every_steps must be >= 1")
        need(0 <= self.swa_lr_threshold <= 1, "swa_lr_threshold must be in [0, 1]")
        need(0 <= self.qat_lr_threshold <= 1, "qat_lr_threshold must be in [0, 1] (0 = off)")
        need(2 <= self.qat_bits <= 8, "qat_bits must be in [2, 8]")
        need(
            self.device in ("auto", "cpu", "cuda"),
            f"device must be auto, cpu or cuda, got {self.device!r}",
        )
        for name in ("val_every_steps", "val_tokens", "final_val_tokens", "checkpoint_every_steps"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0")
        for name in ("val_tokens", "final_val_tokens"):
            # A cap below one sequence leaves validation nothing to score, after the clock.
            n = getattr(self, name)
            need(
                n == 0 or n > self.seq_len,
                f"{name} must be 0 (whole split) or > seq_len {self.seq_len}, got {n}",
            )
        need(self.val_batch_seqs >= 1, "val_batch_seqs must be >= 1")
        need(self.log_every_steps >= 1, "log_every_steps must be >= 1")

    @property
    def micro_batch_tokens(self) -> int:
        return self.micro_batch_seqs * self.seq_len

    def accumulation(self, world_size: int) -> int:
        """Micro-steps per optimizer step on each rank; a clear error when it does not divide."""
        per_rank = world_size * self.micro_batch_tokens
        if self.global_batch_tokens % per_rank:
            raise ValueError(
                f"global_batch_tokens {self.global_batch_tokens} is not divisible by "
                f"world_size {world_size} x micro_batch_seqs {self.micro_batch_seqs} x seq_len "
                f"{self.seq_len} = {per_rank}; change train.micro_batch_seqs or "
                "train.global_batch_tokens"
            )
        return self.global_batch_tokens // per_rank


PRESETS: dict[str, dict[str, Any]] = {
    # Trains on 2 CPU cores in well under a minute; step knobs shrink with the run.
    "tiny": {
        "train_seconds": 30.0,
        "seq_len": 128,
        "global_batch_tokens": 4096,
        "micro_batch_seqs": 16,
        "matrix_lr": 0.02,
        "muon_momentum_warmup_steps": 20,
        "swa_every_steps": 5,
        # A few hundred steps at most: 0.997 would leave the EMA near the init weights.
        "ema_decay": 0.9,
        "compile_warmup_steps": 0,
        "val_every_steps": 25,
        "val_tokens": 16_384,
        "log_every_steps": 5,
        # With the periodic validation: a killed demo run resumes from its last 25 steps
        # (a loaded 2-core machine runs only a few dozen in the 30 s).
        "checkpoint_every_steps": 25,
        "val_batch_seqs": 32,
    },
}

# The April leaderboard's optimizer and schedule (PR #1855 and the PRs it stacks on).
_RECORD: dict[str, Any] = {
    "muon_ns_coeffs": "polar_express",  # #1787
    "muon_row_eq": True,  # #1394
    "min_lr_frac": 0.1,  # #1787, #1855
    "warmdown_frac": 0.85,  # #1855 (0.75 in #1787)
    "ema_decay": 0.9965,  # #1855
    "muon_momentum_start": 0.92,  # #1855: 0.92 -> 0.97 over 1500 steps
    "muon_momentum": 0.97,
    "muon_weight_decay": 0.095,  # #1855 MUON_WD
    "adam_weight_decay": 0.085,  # #1855 EMBED_WD (its scalars use 0.02)
    "matrix_lr": 0.026,
    "embed_lr": 0.03,  # #1855 TIED_EMBED_LR
    "control_lr": 0.02,  # #1855 SCALAR_LR
    "adam_beta2": 0.99,  # #1855 BETA2
    "qat_lr_threshold": 0.0,  # #1855 trains without late QAT (and the floor would block it)
}
PRESETS["record"] = dict(_RECORD)
# Same switches at the tiny preset's scale: its short run keeps tiny's EMA decay and lr.
PRESETS["record-tiny"] = {
    **PRESETS["tiny"],
    **_RECORD,
    "ema_decay": PRESETS["tiny"]["ema_decay"],
    "matrix_lr": PRESETS["tiny"]["matrix_lr"],
}
