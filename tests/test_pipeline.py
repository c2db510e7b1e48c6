"""`pgolf run`: end to end, resume, --redo, config refusal, the scaling rule, stages.

The end-to-end pipeline (data → train → pack → eval, each its own process) runs ONCE per
session: the `pipeline_runs` fixture drives the whole story in one folder (first run →
resume → refused config → --redo pack), snapshots the folder after each step and hands the
record to the tests. Under pytest-xdist a file lock makes the first worker run it and the
other read its record, so the expensive part is never doubled.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from pgolf.config import resolve
from pgolf.errors import ConfigError
from pgolf.pipeline import plan, runner
from pgolf.pipeline.default_preset import default_preset
from pgolf.pipeline.scaling import REF_BATCH_TOKENS, scaling_overrides
from pgolf.pipeline.stages import STAGES, Stage, StageFailed, is_done, marker, run_stage

REPO = Path(__file__).resolve().parents[1]
CAP_BYTES = 16_000_000
MAX_STEPS = 30
# The step cap ends training, never the clock: a loaded 2-core machine may take minutes for
# the 30 steps, and the schedule's progress is the larger of the step and time fractions.
TRAIN_SECONDS = 1e6
# Short training and non-overlapping eval windows keep the whole story under a minute.
RUN_ARGS = (
    "--set",
    f"train.max_steps={MAX_STEPS}",
    "--set",
    f"train.train_seconds={TRAIN_SECONDS:g}",
    "--set",
    "eval.stride=128",
    # The final validation of the whole demo val split (211 K tokens, twice) is most of the
    # training stage's time on a loaded machine; the summary needs only a finite figure.
    "--set",
    "train.final_val_tokens=16384",
)
JSON_FILES = (
    "summary.json",
    "pack.json",
    "eval_none.json",
    "eval_two-phase.json",
    "config.json",
    "data/manifest.json",
)
# A hang guard, not a speed test: far above the ~1 min the story takes on an idle machine.
TIMEOUT_S = 1800


# ---------------------------------------------------------------- the end-to-end story


def _pgolf_run(out: Path, *extra: str) -> dict[str, Any]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgolf.cli", "run", "--out", str(out), *RUN_ARGS, *extra],
        cwd=out.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            # The whole group: a stage process would outlive its killed pgolf run.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return {"rc": proc.returncode, "stdout": stdout, "stderr": stderr}


def _snapshot(out: Path) -> dict[str, list[int]]:
    """Every file under OUT: [size, mtime_ns] (a rewrite or a deletion changes it)."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            st = path.stat()
            files[path.relative_to(out).as_posix()] = [st.st_size, st.st_mtime_ns]
    return files


def _state(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    docs = {}
    for name in JSON_FILES:
        path = out / name
        docs[name] = json.loads(path.read_text()) if path.is_file() else None
    md = out / "summary.md"
    return {
        **result,
        "files": _snapshot(out),
        "json": docs,
        "summary_md": md.read_text() if md.is_file() else None,
    }


def _story(out: Path) -> dict[str, Any]:
    record: dict[str, Any] = {}
    try:
        record["first"] = _state(out, _pgolf_run(out))
        if record["first"]["rc"] != 0:
            return record
        record["resume"] = _state(out, _pgolf_run(out))
        record["refused"] = _state(out, _pgolf_run(out, "--set", "pack.budget_bytes=15000000"))
        record["redo_pack"] = _state(out, _pgolf_run(out, "--redo", "pack"))
    except Exception:
        record["error"] = traceback.format_exc()
    return record


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _story(tmp_path_factory.mktemp("pipeline") / "run")
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    record_path = shared / "pipeline_story.json"
    with FileLock(str(record_path) + ".lock"):
        if not record_path.is_file():
            record_path.write_text(json.dumps(_story(shared / "pipeline_run")))
    return json.loads(record_path.read_text())


def _step(record: dict[str, Any], name: str, rc: int = 0) -> dict[str, Any]:
    if "error" in record:
        pytest.fail(f"the pipeline story crashed:\n{record['error']}")
    if name not in record:
        first = record["first"]
        pytest.fail(f"first run failed (rc {first['rc']}):\n{first['stderr'][-3000:]}")
    step = record[name]
    assert step["rc"] == rc, f"{name}: rc {step['rc']}\n{step['stdout'][-2000:]}\n{step['stderr']}"
    return step


def _mtime(step: dict[str, Any], rel: str) -> int:
    assert rel in step["files"], f"{rel} missing; have {sorted(step['files'])}"
    return step["files"][rel][1]


def test_first_run_leaves_every_stage_output(pipeline_runs):
    first = _step(pipeline_runs, "first")
    for rel in (
        "data/manifest.json",
        "train/checkpoint.safetensors",
        "artifact.pgolf",
        "pack.json",
        "eval_none.json",
        "eval_two-phase.json",
        "summary.json",
        "summary.md",
        "config.json",
        *(f"stages/{name}.json" for name in STAGES),
        *(f"logs/{name}.log" for name in STAGES),
    ):
        assert rel in first["files"], f"{rel} missing after the first run"
    for name in STAGES:
        assert f"stage:{name} status:start" in first["stdout"]
        assert f"stage:{name} status:done" in first["stdout"]
    assert "status:skipped" not in first["stdout"]


def test_first_run_config_is_tiny_on_cpu_with_user_overrides(pipeline_runs):
    config = _step(pipeline_runs, "first")["json"]["config.json"]
    assert config["preset"] == "tiny"
    assert config["train"]["max_steps"] == MAX_STEPS
    assert config["eval"]["stride"] == 128
    assert config["train"]["train_seconds"] == TRAIN_SECONDS


def test_first_run_eval_reports_are_compliant_and_comparable(pipeline_runs):
    docs = _step(pipeline_runs, "first")["json"]
    none, ttt = docs["eval_none.json"], docs["eval_two-phase.json"]
    assert none["ttt"] == "none" and ttt["ttt"] == "two-phase"
    assert none["compliant"] is True and ttt["compliant"] is True
    assert none["tokens_scored"] == ttt["tokens_scored"] > 0
    for report in (none, ttt):
        assert math.isfinite(report["val_bpb"]) and report["val_bpb"] > 0


def test_first_run_summary_figures(pipeline_runs):
    first = _step(pipeline_runs, "first")
    docs = first["json"]
    summary, pack = docs["summary.json"], docs["pack.json"]
    assert summary["preset"] == "tiny"
    assert (summary["gpus"], summary["device"]) == (1, "cpu")
    assert summary["ttt_mode"] == "two-phase"  # tiny's own eval.ttt, evaluated by default
    assert summary["val_bpb_postpack"] == docs["eval_none.json"]["val_bpb"]
    assert summary["val_bpb_ttt"] == docs["eval_two-phase.json"]["val_bpb"]
    assert summary["artifact_bytes"] == first["files"]["artifact.pgolf"][0]
    assert pack["artifact_bytes"] == summary["artifact_bytes"]
    assert pack["code_bytes"] > 0
    assert summary["total_bytes"] == summary["artifact_bytes"] + pack["code_bytes"]
    assert summary["total_bytes"] <= CAP_BYTES
    walls = summary["stage_wall_s"]
    assert set(walls) == set(STAGES)
    assert all(sec > 0 for sec in walls.values())
    assert summary["total_wall_s"] == pytest.approx(sum(walls.values()), abs=0.01)
    assert summary["train"]["steps"] == MAX_STEPS
    assert math.isfinite(summary["train"]["val_bpb_prequant"])


def test_first_run_summary_markdown(pipeline_runs):
    first = _step(pipeline_runs, "first")
    summary, md = first["json"]["summary.json"], first["summary_md"]
    assert md.startswith("# pgolf run (tiny, 1 × cpu)")
    assert f"{summary['val_bpb_postpack']:.4f}" in md
    assert f"{summary['val_bpb_ttt']:.4f}" in md
    assert f"{summary['total_bytes']:,}" in md
    for name in STAGES:
        assert f"| {name} |" in md


def test_resume_skips_every_stage_and_rewrites_the_same_summary(pipeline_runs):
    first = _step(pipeline_runs, "first")
    resume = _step(pipeline_runs, "resume")
    for name in STAGES:
        assert f"stage:{name} status:skipped" in resume["stdout"]
        rel = f"stages/{name}.json"
        assert _mtime(resume, rel) == _mtime(first, rel), f"{rel} was rewritten"
    assert "status:start" not in resume["stdout"]
    for rel in ("train/checkpoint.safetensors", "artifact.pgolf", "eval_none.json"):
        assert _mtime(resume, rel) == _mtime(first, rel), f"{rel} was rewritten"
    assert _mtime(resume, "summary.json") != _mtime(first, "summary.json"), "summary not rewritten"
    assert resume["json"]["summary.json"] == first["json"]["summary.json"]
    assert resume["summary_md"] == first["summary_md"]


def test_other_config_on_same_folder_is_refused_and_loses_nothing(pipeline_runs):
    before = _step(pipeline_runs, "resume")
    refused = _step(pipeline_runs, "refused", rc=2)
    lines = [line for line in refused["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1, refused["stderr"]
    assert lines[0].startswith("error:")
    assert "--redo" in lines[0] and "--out" in lines[0]
    assert "Traceback" not in refused["stderr"]
    assert "status:start" not in refused["stdout"]
    assert refused["files"] == before["files"]


def test_redo_pack_reruns_pack_and_eval_only(pipeline_runs):
    before = _step(pipeline_runs, "refused", rc=2)
    redo = _step(pipeline_runs, "redo_pack")
    out = redo["stdout"]
    for name in ("data", "train"):
        assert f"stage:{name} status:skipped" in out
        assert f"stage:{name} status:start" not in out
        rel = f"stages/{name}.json"
        assert _mtime(redo, rel) == _mtime(before, rel), f"{rel} was rewritten"
    for name in ("pack", "eval"):
        assert f"stage:{name} status:done" in out
        rel = f"stages/{name}.json"
        assert _mtime(redo, rel) > _mtime(before, rel), f"{rel} was not rewritten"
    for rel in ("data/manifest.json", "train/checkpoint.safetensors"):
        assert _mtime(redo, rel) == _mtime(before, rel), f"{rel} was rewritten"
    for rel in ("artifact.pgolf", "pack.json", "eval_none.json", "eval_two-phase.json"):
        assert _mtime(redo, rel) > _mtime(before, rel), f"{rel} was not rewritten"
    docs = redo["json"]
    assert docs["config.json"] == before["json"]["config.json"]
    assert docs["summary.json"]["val_bpb_postpack"] == docs["eval_none.json"]["val_bpb"]
    assert docs["summary.json"]["train"] == before["json"]["summary.json"]["train"]


# ---------------------------------------------------------------- the scaling rule


def _unit(cfg, nproc: int) -> int:
    return nproc * cfg.train.micro_batch_seqs * cfg.train.seq_len


def test_reference_run_changes_nothing_but_train_seconds():
    base = resolve("default")
    for seconds in (600, 1200):
        overrides = scaling_overrides(base, nproc=8, train_seconds=seconds)
        assert overrides == [f"train.train_seconds={seconds}"]
        assert resolve("default", overrides).train.global_batch_tokens == REF_BATCH_TOKENS
    assert scaling_overrides(base, nproc=8, train_seconds=None) == ["train.train_seconds=600"]


def test_one_gpu_five_minutes_is_a_sixteenth_of_the_reference():
    overrides = scaling_overrides(resolve("default"), nproc=1, train_seconds=300)
    t = resolve("default", overrides).train
    assert t.train_seconds == 300
    assert t.global_batch_tokens == 196_608 == REF_BATCH_TOKENS // 4
    assert t.muon_momentum_warmup_steps == 375
    assert t.swa_every_steps == 12
    assert t.ema_decay == pytest.approx(0.988)
    # Learning rates and time-based knobs are not the rule's business.
    ref = resolve("default").train
    assert (t.matrix_lr, t.warmdown_frac) == (ref.matrix_lr, ref.warmdown_frac)


def test_tiny_preset_is_untouched():
    tiny = resolve("tiny")
    assert scaling_overrides(tiny, nproc=1, train_seconds=None) == [
        f"train.train_seconds={tiny.train.train_seconds:g}"
    ]
    assert resolve("tiny", scaling_overrides(tiny, nproc=1, train_seconds=None)) == tiny
    for nproc, seconds in ((1, 10), (8, 5), (2, 600)):
        assert scaling_overrides(tiny, nproc=nproc, train_seconds=seconds) == [
            f"train.train_seconds={seconds}"
        ]


GRID = [(n, s) for n in range(1, 9) for s in (30, 60, 300, 600, 1200, 4800)]


def test_batch_is_whole_micro_batches_per_rank_for_any_gpu_count_and_budget():
    bad = []
    for nproc, seconds in GRID:
        overrides = scaling_overrides(resolve("default"), nproc=nproc, train_seconds=seconds)
        cfg = resolve("default", overrides)
        unit = _unit(cfg, nproc)
        if cfg.train.global_batch_tokens % unit:
            bad.append((nproc, seconds, cfg.train.global_batch_tokens, unit))
    assert not bad, f"(gpus, seconds, batch, gpus*micro*seq) not whole micro-batches: {bad}"


@pytest.mark.parametrize("micro", [8, 24, 48])
def test_scaled_batch_follows_a_user_micro_batch(micro):
    user = (f"train.micro_batch_seqs={micro}",)
    for nproc, seconds in ((1, 300), (2, 300), (4, 150), (8, 60)):
        base = resolve("default", user)
        cfg = resolve(
            "default", (*scaling_overrides(base, nproc=nproc, train_seconds=seconds), *user)
        )
        assert cfg.train.global_batch_tokens % _unit(cfg, nproc) == 0
        assert cfg.train.global_batch_tokens <= REF_BATCH_TOKENS


def test_rule_always_yields_a_valid_config():
    bad = []
    for nproc in range(1, 9):
        for seconds in (1, 2, 5, 30):
            overrides = scaling_overrides(resolve("default"), nproc=nproc, train_seconds=seconds)
            try:
                resolve("default", overrides)
            except ConfigError as e:
                bad.append((nproc, seconds, str(e)))
    assert not bad, f"scaling produced configs the validator rejects: {bad}"


# ---------------------------------------------------------------- runner without the stages


@pytest.fixture
def dry_runner(monkeypatch):
    """run_pipeline with every stage and the summary stubbed out: config logic only."""
    ran: list[str] = []
    monkeypatch.setattr(runner, "_run", lambda out, stage: ran.append(stage.name))
    monkeypatch.setattr(runner, "write_summary", lambda out, config, modes, gpus: {})
    monkeypatch.setattr(plan, "resolve_tokenizer", lambda p: p.out / "data" / "tok.model")

    def call(out: Path, *, overrides=(), redo=(), nproc=1, seconds=None, preset="default"):
        return runner.run_pipeline(
            out=out,
            inputs=(),
            data_dir=None,
            tokenizer=None,
            nproc=nproc,
            train_seconds=seconds,
            ttt_modes=("none", "two-phase"),
            redo=tuple(redo),
            preset=preset,
            overrides=tuple(overrides),
        )

    call.ran = ran
    return call


def test_user_overrides_win_over_the_scaling_rule(tmp_path, dry_runner):
    user = ("train.ema_decay=0.95", "train.global_batch_tokens=98304")
    dry_runner(tmp_path, overrides=user, nproc=1, seconds=300)
    written = json.loads((tmp_path / "config.json").read_text())["train"]
    assert written["ema_decay"] == 0.95
    assert written["global_batch_tokens"] == 98_304
    # Knobs the user left alone still follow the rule.
    assert written["muon_momentum_warmup_steps"] == 375
    assert written["swa_every_steps"] == 12
    assert written["train_seconds"] == 300
    assert dry_runner.ran == list(STAGES)


def _started_folder(out: Path, overrides: tuple[str, ...] = ()) -> None:
    cfg = resolve("default", ("train.train_seconds=600", *overrides))
    (out / "train").mkdir(parents=True)
    (out / "train" / "checkpoint.safetensors").write_bytes(b"weights")
    (out / "stages").mkdir()
    for name in STAGES:
        marker(out, name).write_text("{}")
    (out / "config.json").write_text(cfg.to_json())


def test_redo_all_accepts_a_new_config(tmp_path, dry_runner):
    """The refusal message says 'pass --redo all'; doing so must then work."""
    _started_folder(tmp_path)
    dry_runner(tmp_path, overrides=("pack.budget_bytes=15000000",), redo=("all",), nproc=8)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["pack"]["budget_bytes"] == 15_000_000


@pytest.mark.parametrize("redo", ["train", "pack"])
def test_refused_redo_loses_nothing(tmp_path, dry_runner, redo):
    _started_folder(tmp_path)
    before = _snapshot(tmp_path)
    try:
        dry_runner(tmp_path, overrides=("pack.budget_bytes=15000000",), redo=(redo,), nproc=8)
    except ConfigError:
        assert _snapshot(tmp_path) == before, "a refused run deleted stage files"


def test_same_config_resumes_and_writes_config(tmp_path, dry_runner):
    _started_folder(tmp_path)
    dry_runner(tmp_path, nproc=8)
    assert json.loads((tmp_path / "overrides.json").read_text()) == ["train.train_seconds=600"]
    with pytest.raises(ConfigError, match="--redo"):
        dry_runner(tmp_path, overrides=("pack.budget_bytes=15000000",), nproc=8)


# ---------------------------------------------------------------- one stage


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_run_stage_success_writes_marker_and_log(tmp_path, capsys):
    out_file = tmp_path / "made.txt"
    code = f"import pathlib; print('hello'); pathlib.Path({str(out_file)!r}).write_text('x')"
    stage = Stage("pack", _py(code), outputs=(out_file,))
    assert not is_done(tmp_path, stage)
    record = run_stage(tmp_path, stage)
    assert record["stage"] == "pack" and record["wall_s"] >= 0
    assert json.loads(marker(tmp_path, "pack").read_text())["command"] == list(stage.command)
    assert "hello" in (tmp_path / "logs" / "pack.log").read_text()
    assert "stage:pack status:done" in capsys.readouterr().out
    assert is_done(tmp_path, stage)
    out_file.unlink()
    assert not is_done(tmp_path, stage), "a marker without its outputs is not done"


def test_failing_stage_raises_naming_the_log_and_writes_no_marker(tmp_path):
    stage = Stage("train", _py("import sys; print('boom at step 3'); sys.exit(3)"))
    log = tmp_path / "logs" / "train.log"
    with pytest.raises(StageFailed) as info:
        run_stage(tmp_path, stage)
    assert str(log) in str(info.value)
    assert "exit code 3" in str(info.value)
    assert "boom at step 3" in log.read_text()
    assert not marker(tmp_path, "train").exists()


def test_stage_missing_a_declared_output_fails(tmp_path):
    missing = tmp_path / "artifact.pgolf"
    stage = Stage("pack", _py("print('did nothing')"), outputs=(missing,))
    with pytest.raises(StageFailed) as info:
        run_stage(tmp_path, stage)
    assert str(tmp_path / "logs" / "pack.log") in str(info.value)
    assert str(missing) in str(info.value)
    assert not marker(tmp_path, "pack").exists()


def test_silent_stage_prints_heartbeats_with_elapsed_time_and_last_output(tmp_path, capsys):
    # The child is silent for 3 s after one line, as evaluation is until it has a score.
    code = "import time; print('loaded artifact', flush=True); time.sleep(3); print('scored')"
    run_stage(tmp_path, Stage("eval", _py(code)), heartbeat_s=0.2)
    lines = capsys.readouterr().out.splitlines()
    beats = [i for i, line in enumerate(lines) if line.startswith("stage:eval status:running")]
    assert beats, lines
    assert re.fullmatch(
        r"stage:eval status:running elapsed_s:\d+ quiet_s:\d+ last_output:loaded artifact",
        lines[beats[0]],
    )
    assert lines.index("loaded artifact") < beats[0] < lines.index("scored")
    assert "status:running" not in (tmp_path / "logs" / "eval.log").read_text()


def test_stage_log_is_written_while_the_stage_runs(tmp_path):
    """The child waits until its first line is in the log file: a buffered log would hang."""
    log = tmp_path / "logs" / "pack.log"
    code = (
        "import pathlib, time\n"
        "print('first', flush=True)\n"
        f"log = pathlib.Path({str(log)!r})\n"
        "deadline = time.monotonic() + 60\n"
        "while 'first' not in log.read_text() and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "print('seen' if 'first' in log.read_text() else 'not seen')\n"
    )
    run_stage(tmp_path, Stage("pack", _py(code)))
    assert log.read_text().splitlines() == ["first", "seen"]


def test_interrupted_stage_does_not_leave_its_process_running(tmp_path, monkeypatch):
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(600)"
    pids = []

    def interrupt(text: str) -> None:  # Ctrl-C as the child's first line is shown
        if text.strip().isdigit():
            pids.append(int(text))
            raise KeyboardInterrupt

    monkeypatch.setattr(sys.stdout, "write", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_stage(tmp_path, Stage("train", _py(code)))
    monkeypatch.undo()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # terminated and reaped, not sleeping on


# torchrun's summary after `kill -9` of rank 1 (torch 2.13): the survivor, ended by torchrun's
# SIGTERM or by its broken collective, may be listed as the root cause.
TORCHRUN_SUMMARY = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
======================================================
pgolf.train FAILED
------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-30_22:49:36
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 6020)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 6020
------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-30_22:49:36
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 6019)
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
======================================================
"""


def test_failed_torchrun_stage_names_the_rank_that_died(tmp_path):
    code = f"import sys; print({TORCHRUN_SUMMARY!r}); sys.exit(1)"
    stage = Stage("train", (*_py(code), "--nproc_per_node=2"))
    with pytest.raises(StageFailed) as info:
        run_stage(tmp_path, stage)
    message = str(info.value)
    assert "\n" not in message
    assert "rank 1 of 2 died (SIGKILL)" in message
    assert str(tmp_path / "logs" / "train.log") in message


def test_failed_torchrun_stage_without_a_killed_rank_names_the_root_cause(tmp_path):
    summary = TORCHRUN_SUMMARY.replace("-9 (pid: 6020)  (SIGKILL)", "-15 (pid: 6020)  (SIGTERM)")
    code = f"import sys; print({summary!r}); sys.exit(1)"
    with pytest.raises(StageFailed, match="rank 0 of 2 exited with code 1"):
        run_stage(tmp_path, Stage("train", (*_py(code), "--nproc_per_node=2")))


@pytest.mark.parametrize("checkpoint_step", [None, 25])
def test_failed_training_says_whether_rerunning_resumes(tmp_path, checkpoint_step):
    if checkpoint_step is not None:
        (tmp_path / "train").mkdir()
        (tmp_path / "train" / "resume.json").write_text(json.dumps({"step": checkpoint_step}))
    with pytest.raises(StageFailed) as info:
        runner._run(tmp_path, Stage("train", _py("import os; os.abort()")))
    message = str(info.value)
    assert "\n" not in message and "SIGABRT" in message
    if checkpoint_step is None:
        assert "no checkpoint was written yet" in message
    else:
        assert "last checkpoint (step 25)" in message and "re-run the same pgolf run" in message
        assert f"--resume {tmp_path / 'train'}" in message


# ---------------------------------------------------------------- a killed tiny run


@pytest.mark.slow
def test_killed_tiny_run_resumes_from_its_mid_run_checkpoint(tmp_path):
    """The tiny preset's own checkpoint interval: a killed demo run does not restart at 0."""
    from train_helpers import build_dataset

    every = resolve("tiny").train.checkpoint_every_steps
    assert every > 0, "the tiny preset writes no mid-run checkpoint"
    data, tok = build_dataset(tmp_path / "ds", n_train_docs=600, n_val_docs=20)
    # Small steps; the step cap, not the clock, ends the run.
    sets = (
        f"train.max_steps={every + 10}",
        "train.train_seconds=1e6",
        "train.seq_len=64",
        "train.global_batch_tokens=256",
        "train.micro_batch_seqs=2",
        "train.val_every_steps=0",
        "train.final_val_tokens=2048",
    )
    p = plan.PipelineInputs(out=tmp_path / "run", data_dir=data, tokenizer=tok)
    stage = plan.train_stage(p, plan.config_args(resolve("tiny", sets), sets), tok)
    run_dir = tmp_path / "run" / "train"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(stage.command, env=env, stdout=subprocess.DEVNULL)
    try:
        while proc.poll() is None and not (run_dir / "resume.json").is_file():
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no handler runs, as when a machine goes away
    finally:
        proc.wait()
    assert json.loads((run_dir / "resume.json").read_text())["step"] == every
    resumed = plan.train_stage(p, plan.config_args(resolve("tiny", sets), sets), tok)
    assert "--resume" in resumed.command
    run_stage(tmp_path / "run", resumed)
    log = (tmp_path / "run" / "logs" / "train.log").read_text()
    assert f"resumed step:{every} " in log
    assert json.loads((run_dir / "resume.json").read_text())["step"] == every + 10


def test_default_preset_is_record_on_a_gpu_unless_the_tokenizer_says_otherwise(
    shared_dir, tmp_path
):
    toks = shared_dir / "tokenizers"
    assert default_preset(False, toks / "fineweb_8192_bpe.model")[0] == "tiny"
    assert default_preset(True) == ("record", "gpu,tokenizer_trained_with_vocab_8192")
    assert default_preset(True, toks / "fineweb_8192_bpe.model")[0] == "record"
    preset, why = default_preset(True, toks / "fineweb_1024_bpe.model")
    assert preset == "default" and "1024" in why
    data = tmp_path / "data"  # --data: the tokenizer lying in the shard folder decides
    data.mkdir()
    shutil.copy(toks / "fineweb_4096_bpe.model", data / "tokenizer.model")
    assert default_preset(True, None, data)[0] == "default"
