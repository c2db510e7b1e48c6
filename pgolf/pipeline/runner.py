"""Runs the plan: resolve one config, run the unfinished stages in order, write the summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pgolf.config import RunConfig, from_json
from pgolf.errors import ConfigError
from pgolf.io import atomic_write_text
from pgolf.pack import codebytes
from pgolf.pipeline import plan
from pgolf.pipeline.scaling import resolve_scaled
from pgolf.pipeline.stages import STAGES, StageFailed, is_done, marker, run_stage
from pgolf.pipeline.summary import write_summary


def _check_same_config(out: Path, config: RunConfig) -> None:
    """Refuse to resume a folder whose finished stages used another config."""
    path = out / "config.json"
    if not path.is_file():
        return
    before = from_json(path.read_text())
    if before != config:
        raise ConfigError(
            f"{out} was started with a different config (see {path}); "
            "re-run with the same options, pass --redo all to start it over, or use a new --out folder"
        )


def _redo_from(out: Path, redo: tuple[str, ...]) -> None:
    """Forget the named stage and every stage after it."""
    if not redo:
        return
    first = 0 if "all" in redo else min(STAGES.index(name) for name in redo)
    for name in STAGES[first:]:
        for path in (out / "stages").glob(f"{name}*.json"):
            path.unlink()
    if first <= STAGES.index("train") and (out / "train").exists():
        # A redone training run starts fresh instead of resuming the old checkpoint.
        shutil.rmtree(out / "train")


def run_pipeline(
    *,
    out: Path,
    inputs: tuple[str, ...],
    data_dir: Path | None,
    tokenizer: Path | None,
    nproc: int,
    train_seconds: float | None,
    ttt_modes: tuple[str, ...],
    redo: tuple[str, ...],
    preset: str,
    overrides: tuple[str, ...],
    preset_reason: str | None = None,
) -> dict:
    config, all_overrides = resolve_scaled(
        preset, overrides, nproc=nproc, train_seconds=train_seconds
    )
    # Without --ttt: the artifact without TTT, then with the recipe's own TTT mode.
    ttt_modes = ttt_modes or tuple(dict.fromkeys(("none", config.eval.ttt)))
    out.mkdir(parents=True, exist_ok=True)
    p = plan.PipelineInputs(
        out=out,
        inputs=inputs,
        data_dir=data_dir,
        tokenizer=tokenizer,
        nproc=nproc,
        ttt_modes=ttt_modes,
    )
    # Check before forgetting anything: a refused run must lose nothing. --redo all starts
    # the folder over, so it may change the config and inputs; a partial redo must keep them.
    if "all" not in redo:
        _check_same_config(out, config)
        ident = plan.check_same_inputs(p)
    else:
        ident = plan.inputs_identity(p)
    if preset_reason is not None:  # chosen for the user: say which and why, once it is valid
        print(f"preset:{preset} reason:{preset_reason}")
    _redo_from(out, redo)
    atomic_write_text(out / "config.json", config.to_json())
    atomic_write_text(out / "overrides.json", json.dumps(list(all_overrides), indent=2) + "\n")
    plan.record_inputs(p, ident)
    cfg_args = plan.config_args(config, all_overrides)
    from pgolf.pack.api import use_gptq

    # The counted code is measured by building the exported script: done in the background
    # while data and training run, the pack stage finds it cached.
    warm = None if marker(out, "pack").is_file() else codebytes.prewarm(config)
    try:
        if data_dir is None:
            _run(out, plan.data_stage(p, cfg_args))
        tok = plan.resolve_tokenizer(p)
        _run(out, plan.train_stage(p, cfg_args, tok))
        _run(out, plan.pack_stage(p, cfg_args, tok, gptq_on=use_gptq(config.pack)))
        _run(out, plan.eval_stage(p, cfg_args, tok))
    finally:
        if warm is not None and warm.poll() is None:
            warm.kill()
    return write_summary(out, config, ttt_modes, nproc)


def _run(out: Path, stage) -> None:
    if is_done(out, stage):
        print(
            f"stage:{stage.name} status:skipped reason:done_before marker:{marker(out, stage.name)}"
        )
        return
    try:
        run_stage(out, stage)
    except StageFailed as e:
        if stage.name != "train":
            raise
        raise StageFailed(f"{e}; {_resume_hint(out / 'train')}") from None


def _resume_hint(run_dir: Path) -> str:
    """What re-running does after a failed training stage: resume, or start over."""
    state = run_dir / "resume.json"
    try:
        step = json.loads(state.read_text())["step"]
    except (OSError, ValueError, KeyError):
        return "no checkpoint was written yet, so re-running the same pgolf run command starts training over"
    return (
        f"the last checkpoint (step {step}) is kept in {run_dir}: re-run the same pgolf run "
        f"command to resume from it (it passes --resume {run_dir} to pgolf-train)"
    )
