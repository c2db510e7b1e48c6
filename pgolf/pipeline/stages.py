"""Stage runner: each pipeline stage is its own process, with files between stages.

A finished stage leaves ``stages/NAME.json`` (its command, wall time, exit code);
re-running the pipeline on the same folder skips stages that have one, unless asked
to redo them. Output is streamed to the terminal and kept in ``logs/NAME.log``; a stage
that stays silent (evaluation prints nothing until it has a score) gets a heartbeat line
with its elapsed time and last output, so a long stage never looks hung.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from pgolf.errors import PgolfError
from pgolf.io import atomic_write_text

STAGES = ("data", "train", "pack", "eval")
# Seconds of silence after which a running stage prints a heartbeat line.
HEARTBEAT_S = 30.0
# Output lines kept in memory to explain a failure (torchrun's summary is the last ~30).
TAIL_LINES = 200
# One entry of torchrun's failure summary: "rank : 1 (local_rank: 1)" then "exitcode : -9".
_TORCHRUN_FAILURE = re.compile(
    r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)"
)
_TORCHRUN_ROOT = "Root Cause (first observed failure):"


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


def run_stage(
    out_dir: Path,
    stage: Stage,
    env: dict[str, str] | None = None,
    *,
    heartbeat_s: float = HEARTBEAT_S,
) -> dict[str, Any]:
    """Run one stage to completion, teeing its output to logs/NAME.log; returns its record."""
    log_path = out_dir / "logs" / f"{stage.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"stage:{stage.name} status:start command:{' '.join(stage.command)}", flush=True)
    start = time.perf_counter()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            stage.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        assert proc.stdout is not None
        try:
            for line in _lines_with_heartbeat(proc.stdout, stage.name, start, heartbeat_s):
                sys.stdout.write(line)
                log.write(line)
                log.flush()
                tail.append(line)
        except BaseException:
            # Ctrl-C or an error here must not leave the stage (a training job holding
            # GPUs) running without us; a re-run resumes from its last checkpoint.
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        code = proc.wait()
    seconds = time.perf_counter() - start
    missing = [str(p) for p in stage.outputs if not p.exists()]
    if code != 0 or missing:
        why = _failure_reason(code, "".join(tail), stage.command) if code else None
        why = why or f"missing outputs {missing}"
        raise StageFailed(f"stage {stage.name} failed: {why}; see {log_path}")
    record = {"stage": stage.name, "command": list(stage.command), "wall_s": round(seconds, 3)}
    atomic_write_text(marker(out_dir, stage.name), json.dumps(record, indent=2) + "\n")
    print(f"stage:{stage.name} status:done wall_s:{seconds:.1f}", flush=True)
    return record


def _lines_with_heartbeat(stream: IO[str], name: str, start: float, every_s: float):
    """The stream's lines as they come; after every ``every_s`` of silence, a heartbeat line.

    A reader thread owns the blocking reads so the heartbeat can fire while the child
    computes without printing; ``None`` marks the end of the stream.
    """
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name=f"stage-{name}-reader", daemon=True).start()
    last, quiet_since = "", time.perf_counter()
    while True:
        try:
            line = lines.get(timeout=max(0.0, quiet_since + every_s - time.perf_counter()))
        except queue.Empty:
            now = time.perf_counter()
            print(
                f"stage:{name} status:running elapsed_s:{now - start:.0f} "
                f"quiet_s:{now - quiet_since:.0f} last_output:{last}",
                flush=True,
            )
            # The next heartbeat comes after another full period of silence.
            quiet_since += every_s
            continue
        if line is None:
            return
        if line.strip():
            last = line.strip()[-200:]
        quiet_since = time.perf_counter()
        yield line


def _failure_reason(code: int, output: str, command: tuple[str, ...]) -> str:
    """Why a stage's process failed, naming the rank that died when torchrun ran it."""
    rank = _failed_rank(output)
    if rank is None:
        return f"exit code {code}" + (f" ({_signal_name(-code)})" if code < 0 else "")
    world = next((a.split("=", 1)[1] for a in command if a.startswith("--nproc_per_node=")), "?")
    who, rank_code = rank
    how = f"died ({_signal_name(-rank_code)})" if rank_code < 0 else f"exited with code {rank_code}"
    return f"rank {who} of {world} {how}"


def _failed_rank(output: str) -> tuple[int, int] | None:
    """(rank, exit code) of the rank that brought a torchrun job down, from its summary.

    torchrun lists every failed worker and marks a "root cause" (the first it observed),
    but a survivor whose collective broke when its peer vanished can be observed first. A
    rank killed by a signal other than SIGTERM (which torchrun itself sends to the
    survivors) is the real cause; otherwise trust the root cause.
    """
    failures = [(int(r), int(c)) for r, c in _TORCHRUN_FAILURE.findall(output)]
    if not failures:
        return None
    killed = [f for f in failures if f[1] < 0 and f[1] != -signal.SIGTERM]
    if killed:
        return killed[0]
    root = output.rfind(_TORCHRUN_ROOT)
    if root >= 0:
        after = _TORCHRUN_FAILURE.search(output, root)
        if after:
            return int(after.group(1)), int(after.group(2))
    return failures[0]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stage_record(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = marker(out_dir, name)
    return json.loads(path.read_text()) if path.is_file() else None
