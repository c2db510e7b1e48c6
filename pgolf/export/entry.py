"""What the exported ``train_gpt.py`` runs: train → pack → evaluate in one launch.

The challenge starts the script as ``torchrun --standalone --nproc_per_node=8 train_gpt.py``
(or ``python3 train_gpt.py``) in its repository's layout, configured by environment
variables. We read those, apply them to the run's config and call pgolf's own trainer,
packer and evaluator, printing the lines reviewers grep for (``Code size:``, ``Total
submission size``, ``final_..._exact val_loss:... val_bpb:...``).

The training clock includes the pack: the trainer stops ``train.pack_reserve_seconds``
before ``MAX_WALLCLOCK_SECONDS`` so quantization and coding fit in the 600 s.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pgolf import runtime
from pgolf.config import RunConfig, from_json
from pgolf.errors import ConfigError, DataError, PgolfError
from pgolf.eval.evaluate import evaluate_many
from pgolf.logs import Logger
from pgolf.pack.api import calibrate_on_ranks, pack_checkpoint
from pgolf.train.loop import Trainer

ARTIFACT = "final_model.pgolf"
# Environment variable -> config override (the challenge's names where it has one).
ENV_OVERRIDES = {
    "SEED": "train.seed",
    "MAX_WALLCLOCK_SECONDS": "train.train_seconds",
    "ITERATIONS": "train.max_steps",
    "VAL_LOSS_EVERY": "train.val_every_steps",
    "TRAIN_LOG_EVERY": "train.log_every_steps",
}


def env_config(base: RunConfig, env: dict[str, str]) -> RunConfig:
    """The embedded config with the environment's overrides.

    Unset variables keep the run's values, so the script repeats the run (whose clock is
    600 s for a record recipe); ``MAX_WALLCLOCK_SECONDS`` sets ``train.train_seconds``.
    """
    for var, key in ENV_OVERRIDES.items():
        if var in env:
            try:
                base = base.with_overrides([f"{key}={env[var]}"])
            except ConfigError as e:  # named by the variable the user set, not the config key
                why = f" ({e})" if str(e) else ""  # the exported script drops config texts
                raise DataError(f"{var}={env[var]!r} is not a valid {key}{why}") from None
    return base


def main(config_json: str, script: str) -> None:
    """Train, pack, evaluate; a bad input ends the script with one ``error:`` line, exit 2."""
    try:
        _main(config_json, script)
    except PgolfError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _main(config_json: str, script: str) -> None:
    env = dict(os.environ)
    run = env_config(from_json(config_json), env)
    data = Path(env.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024"))
    tokenizer = Path(env.get("TOKENIZER_PATH", "./data/tokenizers/fineweb_1024_bpe.model"))
    out = Path("runs") / env.get("RUN_ID", f"seed{run.train.seed}")
    code_bytes = os.path.getsize(script)
    d = runtime.init(run.train.device)
    log = Logger(enabled=d.is_main)
    try:
        trainer = Trainer(run, data, tokenizer, out)
        trainer.warmup()
        summary = trainer.run()
        trainer.log.close()
        t0 = time.perf_counter()
        # The script measures itself: the file on disk is the counted code.
        pack_cfg = dataclasses.replace(trainer.cfg.pack, code_bytes=code_bytes)
        # Every rank generates its share of GPTQ's calibration text; rank 0 packs. The others
        # read the checkpoint rank 0 has just written, so they wait for it first. Rank 0
        # calibrates inside the pack, so its CPU estimates the sizes meanwhile.
        if d.distributed:
            dist.barrier()
        calibration = functools.partial(calibrate_on_ranks, out, pack_cfg, d, log)
        if d.is_main:
            packed = pack_checkpoint(
                out,
                ARTIFACT,
                pack_cfg,
                tokenizer=tokenizer,
                progress=False,
                calibration=calibration,
            )
        else:
            calibration()
        if d.distributed:
            dist.barrier()
        pack_s = time.perf_counter() - t0
        if d.is_main:
            _log_sizes(log, packed, summary["train_s"], pack_s)
        report = evaluate_many(ARTIFACT, data, tokenizer, [trainer.cfg.eval], d=d)[0]
        if d.is_main:
            tag = "sliding_window" + ("" if report["ttt"] == "none" else f"_ttt_{report['ttt']}")
            print(
                f"final_pgolf_{tag}_exact val_loss:{float(report['val_loss'])!r} "
                f"val_bpb:{float(report['val_bpb'])!r} eval_time:"
                f"{1000 * report['time_total_s']:.0f}ms",
                flush=True,
            )
    finally:
        runtime.shutdown()


def _log_sizes(log: Logger, packed: dict, train_s: float, pack_s: float) -> None:
    print(f"Serialized model pgolf: {packed['artifact_bytes']} bytes", flush=True)
    print(f"Code size: {packed['code_bytes']} bytes", flush=True)
    print(f"Total submission size pgolf: {packed['total_bytes']} bytes", flush=True)
    log.log(
        "clock",
        train_time_s=train_s,
        pack_time_s=pack_s,
        train_plus_pack_s=train_s + pack_s,
        torch_version=torch.__version__,
    )
