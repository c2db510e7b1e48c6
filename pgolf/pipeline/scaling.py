"""The scaling rule: a short run on fewer GPUs is a faithful small copy of 8 GPUs × 600 s.

The reference run is the challenge's: 8 GPUs, 600 s of training clock, a global batch
of 786,432 tokens, and the step-count knobs of the public records (momentum warmup
1500 steps, SWA every 50 steps, EMA decay 0.997). Let

    s = (gpus × train_seconds) / (8 × 600)        # the run's share of the reference compute

At equal per-GPU throughput the run sees s times the reference's tokens. We keep the
*shape* of the run and shrink both of its axes by sqrt(s):

* global batch  = 786,432 × sqrt(s), rounded to whole micro-batches per rank
  (1 GPU × 300 s: s = 1/16, batch 196,608 = 4 micro-batches of 24 × 2048);
* steps         ∝ s / sqrt(s) = sqrt(s) of the reference's, so every step-count knob
  (momentum warmup, SWA interval) is multiplied by steps_ratio = tokens_ratio / batch_ratio,
  and the EMA keeps its horizon as a fraction of the run: (1 - decay) / steps_ratio.
* Time-based knobs (warmdown_frac) and learning rates stay as they are: the warmdown is
  a fraction of the wall clock whatever the step count, and Muon's update is normalised.

Splitting the shrink evenly is the usual compromise for small budgets: a batch far above
the critical batch size wastes tokens, far below it the step count (and Python/launch
overhead per step) dominates. Runs with s ≥ 1 keep the reference unchanged. Explicit
``--set`` overrides always win over the rule.
"""

from __future__ import annotations

import math

from pgolf.config import RunConfig, resolve

REF_GPUS = 8
REF_SECONDS = 600.0
REF_BATCH_TOKENS = 786_432
# Presets sized for the reference run; the small ones (tiny, record-tiny) set their own knobs.
FULL_SIZE_PRESETS = ("default", "record")


def compute_share(gpus: int, train_seconds: float) -> float:
    return (gpus * train_seconds) / (REF_GPUS * REF_SECONDS)


def scaled_batch(cfg: RunConfig, gpus: int, share: float) -> int:
    """sqrt(share) of the reference batch (capped at it), in whole micro-batches on every rank."""
    unit = gpus * cfg.train.micro_batch_seqs * cfg.train.seq_len
    target = REF_BATCH_TOKENS * math.sqrt(min(1.0, share))
    return max(1, round(target / unit)) * unit


# The EMA must keep averaging at least this little per step, however short the run.
MIN_EMA_DECAY = 0.5


def scaling_overrides(cfg: RunConfig, *, nproc: int, train_seconds: float | None) -> list[str]:
    """``section.key=value`` overrides that scale the default recipe to this run.

    Only the full-size presets (``FULL_SIZE_PRESETS``) follow the rule: the small ones
    (``tiny``, ``record-tiny``) already set their own small-run knobs.
    """
    seconds = cfg.train.train_seconds if train_seconds is None else train_seconds
    overrides = [f"train.train_seconds={seconds:g}"]
    if cfg.preset not in FULL_SIZE_PRESETS:
        return overrides
    share = compute_share(nproc, seconds)
    batch = scaled_batch(cfg, nproc, share)
    if batch != cfg.train.global_batch_tokens:
        # Also at share >= 1: 786,432 is not whole micro-batches on 3, 5, 6 or 7 GPUs.
        overrides.append(f"train.global_batch_tokens={batch}")
    if share >= 1.0:
        return overrides
    steps_ratio = share / (batch / REF_BATCH_TOKENS)
    t = cfg.train
    ema_decay = max(MIN_EMA_DECAY, 1.0 - (1.0 - t.ema_decay) / steps_ratio)
    overrides += [
        f"train.muon_momentum_warmup_steps={max(1, round(t.muon_momentum_warmup_steps * steps_ratio))}",
        f"train.swa_every_steps={max(1, round(t.swa_every_steps * steps_ratio))}",
        f"train.ema_decay={ema_decay:.6f}",
    ]
    return overrides


def resolve_scaled(
    preset: str, overrides: tuple[str, ...] | list[str], *, nproc: int, train_seconds: float | None
) -> tuple[RunConfig, tuple[str, ...]]:
    """The config a run of ``preset`` on ``nproc`` GPUs for ``train_seconds`` trains, and the
    overrides that make it: the scaling rule's, then the user's (which win)."""
    base = resolve(preset, overrides)
    scaled = scaling_overrides(base, nproc=nproc, train_seconds=train_seconds)
    all_overrides = (*scaled, *overrides)
    return resolve(preset, all_overrides), all_overrides
