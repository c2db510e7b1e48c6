"""Stage runner: each pipeline stage is its own process, with files between stages.

A finished stage leaves ``stages/NAME.json`` (its command, wall time, exit code);
re-running the pipeline on the same folder skips stages that have one, unless asked
to redo them. Output is streamed to the terminal and kept in ``logs/NAME.log``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pgolf.errors import PgolfError
from pgolf.io import atomic_write_text

STAGES = ("data", "train", "pack", "eval")


class StageFailed(PgolfError):
    """A stage's process exited non-zero; its log names the cause."""


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    command: tuple[str, ...]
    # Files the stage must leave behind; a stage that exits 0 without them failed.
    outputs: tuple[Path, ...] = ()


def python_module(module: str, *args: str, nproc: int = 1) -> tuple[str, ...]:
    """``python -m module args`` for one process, ``torchrun`` for several."""
    if nproc > 1:
        return (
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            module,
            *args,
        )
    return (sys.executable, "-m", module, *args)


def marker(out_dir: Path, name: str) -> Path:
    return out_dir / "stages" / f"{name}.json"


def is_done(out_dir: Path, stage: Stage) -> bool:
    return marker(out_dir, stage.name).is_file() and all(p.exists() for p in stage.outputs)


def run_stage(out_dir: Path, stage: Stage, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one stage to completion, teeing its output to logs/NAME.log; returns its record."""
    log_path = out_dir / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"stage:{stage.name} status:start command:{' '.join(stage.command)}", flush=True)
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            stage.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
    seconds = time.perf_counter() - start
    missing = [str(p) for p in stage.outputs if not p.exists()]
    if code != 0 or missing:
        why = f"exit code {code}" if code != 0 else f"missing outputs {missing}"
        raise StageFailed(f"stage {stage.name} failed ({why}); see {log_path}")
    record = {"stage": stage.name, "command": list(stage.command), "wall_s": round(seconds, 3)}
    atomic_write_text(marker(out_dir, stage.name), json.dumps(record, indent=2) + "\n")
    print(f"stage:{stage.name} status:done wall_s:{seconds:.1f}", flush=True)
    return record


def stage_record(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = marker(out_dir, name)
    return json.loads(path.read_text()) if path.is_file() else None
