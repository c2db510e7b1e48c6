"""What pgolf refuses, one class per test: one line, exit 2, no traceback, nothing lost.

Every refusal here happens before the expensive work, so the tests run on the demo shards
(or on dummy files) in seconds: a refused command must not need a trained model to refuse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pgolf.cli import cli
from pgolf.data.shards import shard_name, write_shard

SHARED_TOKENIZERS = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"


def refused(res, *needles: str) -> str:
    """The command exited 2 with exactly one 'error: ...' line naming every needle."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo shards (vocab 512) with their manifest.json and tokenizer.model."""
    out = tmp_path_factory.mktemp("refusals") / "data"
    res = invoke("data", "build", "--demo", "--out", out, "--workers", "1", "--no-progress")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="module")
def other_tokenizer(demo: Path) -> Path:
    """A real challenge tokenizer (vocab 1024): every demo id is in range, the text is not."""
    path = SHARED_TOKENIZERS / "fineweb_1024_bpe.model"
    if not path.is_file():  # fall back to a same-vocab tokenizer of other content
        from eval_helpers import train_tiny_tokenizer

        path = train_tiny_tokenizer(demo.parent / "other.model", seed=1)
    return path


# ---------------------------------------------------------------- silent wrong results


def test_wrong_tokenizer_for_the_shards_is_refused_by_train_and_eval(demo, other_tokenizer):
    run = demo.parent / "run"
    res = invoke("train", "--data", demo, "--tokenizer", other_tokenizer, "--out", run,
                 "--preset", "tiny")  # fmt: skip
    refused(res, "sha256", "manifest.json", "--tokenizer")
    assert not run.exists(), "a refused run must not create its run dir"
    # Eval checks the same before it reads the artifact (none exists here).
    res = invoke("eval", demo.parent / "missing.pgolf", "--data", demo,
                 "--tokenizer", other_tokenizer, "--preset", "tiny")  # fmt: skip
    refused(res, "sha256", "manifest.json")
    # pgolf run sees it before its first stage.
    res = invoke("run", "--out", run, "--data", demo, "--tokenizer", other_tokenizer)
    refused(res, "sha256", "manifest.json")
    assert not run.exists()


def _null_sha_artifact(path: Path) -> Path:
    from eval_helpers import noisy_tiny_model

    from pgolf.config.base import to_dict
    from pgolf.format.writer import EncodedTensor, SegmentPlan, build

    model = noisy_tiny_model()
    tensors = [
        EncodedTensor(n, tuple(t.shape), "float32", "fp32", t.float().numpy().tobytes())
        for n, t in model.state_dict().items()
    ]
    plan = [SegmentPlan("zstd", "none", tuple((t.name, "values") for t in tensors))]
    tok = {"sha256": None, "vocab_size": model.cfg.vocab_size}
    path.write_bytes(build(tensors, plan, model=to_dict(model.cfg), tokenizer=tok))
    return path


def test_artifact_without_tokenizer_hash_needs_an_explicit_opt_out(tmp_path):
    from eval_helpers import random_stream, train_tiny_tokenizer, write_val

    tok = train_tiny_tokenizer(tmp_path / "tok.model")
    art = _null_sha_artifact(tmp_path / "nosha.pgolf")
    data = write_val(tmp_path / "data", random_stream(300, seed=3))
    fast = ["--preset", "tiny", "--set", "eval.window=32", "--set", "eval.stride=16",
            "--set", "eval.device=cpu", "--ttt", "none"]  # fmt: skip
    report = tmp_path / "eval.json"
    res = invoke("eval", art, "--data", data, "--tokenizer", tok, "--report", report, *fast)
    refused(res, "no tokenizer sha256", "--unverified-tokenizer")
    assert not report.exists()
    res = invoke("eval", art, "--data", data, "--tokenizer", tok, "--report", report,
                 "--unverified-tokenizer", *fast)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(report.read_text())["tokenizer_verified"] is False


@pytest.fixture
def stubbed_pipeline(monkeypatch):
    """pgolf run with its stages and summary stubbed: only the identity checks run."""
    from pgolf.pipeline import plan, runner

    monkeypatch.setattr(runner, "_run", lambda out, stage: None)
    monkeypatch.setattr(runner, "write_summary", lambda out, config, modes, gpus: {})
    monkeypatch.setattr(plan, "resolve_tokenizer", lambda p: p.tokenizer or p.out / "tok.model")


@pytest.mark.parametrize("change", ["--tokenizer", "--input", "--data"])
def test_finished_run_folder_refuses_other_inputs(tmp_path, demo, stubbed_pipeline, change):
    tok = demo / "tokenizer.model"
    other_tok = tmp_path / "tok2.model"
    shutil.copyfile(tok, other_tok)
    other_tok.write_bytes(other_tok.read_bytes() + b"\0")  # same name, other content
    text = tmp_path / "a.txt"
    text.write_text("one document\n\nanother\n")
    other_text = tmp_path / "b.txt"
    other_text.write_text("something else entirely\n")
    other_data = tmp_path / "data2"
    shutil.copytree(demo, other_data)
    (other_data / shard_name("fineweb", "val", 0)).unlink()
    first = {"--tokenizer": tok, "--input": text, "--data": demo}[change]
    second = {"--tokenizer": other_tok, "--input": other_text, "--data": other_data}[change]
    out = tmp_path / "run"
    base = ["run", "--out", out, "--preset", "tiny"]
    assert invoke(*base, change, first).exit_code == 0
    before = snapshot(out)
    refused(invoke(*base, change, second), f"{change} differ", "--redo all")
    assert snapshot(out) == before
    assert invoke(*base, change, first).exit_code == 0  # the same inputs still resume
    assert invoke(*base, change, second, "--redo", "all").exit_code == 0


# ---------------------------------------------------------------- lost work


def _trained_run_dir(path: Path) -> Path:
    """A run dir as pgolf-train leaves it (a real checkpoint; the log is a stand-in)."""
    from pgolf.checkpoint import save_checkpoint
    from pgolf.config import resolve
    from pgolf.pack.synthetic import random_state

    cfg = resolve("tiny")
    save_checkpoint(path, random_state(cfg.model, seed=1), cfg, extra={"kind": "final"})
    (path / "train_log.jsonl").write_text('{"event": "final"}\n')
    return path


def test_train_refuses_a_finished_run_dir_without_resume(tmp_path, demo):
    run = _trained_run_dir(tmp_path / "run")
    before = snapshot(run)
    res = invoke("train", "--data", demo, "--tokenizer", demo / "tokenizer.model",
                 "--out", run, "--preset", "tiny")  # fmt: skip
    refused(res, "already holds a training run", f"--resume {run}", "--overwrite")
    assert snapshot(run) == before
    res = invoke("train", "--data", demo, "--tokenizer", demo / "tokenizer.model",
                 "--resume", run, "--overwrite")  # fmt: skip
    refused(res, "pick one")
    assert snapshot(run) == before


def _pack(run: Path, artifact: Path) -> object:
    return invoke("pack", run, "-o", artifact, "--preset", "tiny", "--set", "pack.code_bytes=0",
                  "--set", "pack.search=false", "--no-progress")  # fmt: skip


def test_unpack_refuses_to_replace_a_trained_checkpoint(tmp_path):
    run = _trained_run_dir(tmp_path / "run")
    before = snapshot(run)
    # The refusal comes before the artifact is read: a missing one proves the order.
    res = invoke("unpack", tmp_path / "missing.pgolf", "-o", run)
    refused(res, "checkpoint.safetensors", "not from an earlier unpack", "new folder")
    assert snapshot(run) == before
    # An earlier unpack is ours to replace.
    art = tmp_path / "a.pgolf"
    assert _pack(run, art).exit_code == 0
    for _ in range(2):
        res = invoke("unpack", art, "-o", tmp_path / "unpacked")
        assert res.exit_code == 0, res.output


def test_empty_val_split_is_refused_before_training(tmp_path, demo):
    data = tmp_path / "data"
    data.mkdir()
    for p in demo.glob("*_train_*.bin"):
        shutil.copyfile(p, data / p.name)
    shutil.copyfile(demo / "tokenizer.model", data / "tokenizer.model")
    write_shard(data / shard_name("fineweb", "val", 0), np.zeros(0, dtype=np.uint16))
    run = tmp_path / "run"
    res = invoke("train", "--data", data, "--tokenizer", data / "tokenizer.model",
                 "--out", run, "--preset", "tiny")  # fmt: skip
    refused(res, "val split has 0 tokens", "--val-docs")
    assert not run.exists()


def test_killed_writers_temp_files_are_swept_by_the_next_pack(tmp_path):
    """A writer killed mid-write (no cleanup can run) leaves its temp file; the next pack
    into that folder removes it, and leaves a live writer's and foreign files alone."""
    from pgolf.io import HOST

    out = tmp_path / "out"
    out.mkdir()
    kill_mid_write = (
        "import os, signal, sys; from pgolf.io import atomic_open; "
        "cm = atomic_open(sys.argv[1]); f = cm.__enter__(); f.write(b'half'); f.flush(); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run([sys.executable, "-c", kill_mid_write, str(out / "artifact.pgolf")])
    stale = list(out.iterdir())
    assert len(stale) == 1 and stale[0].name.startswith(".artifact.pgolf.pgolf-")
    live = out / f".other.pgolf.pgolf-{os.getpid()}-{HOST}-a3b4.tmp"
    foreign = out / ".artifact.pgolf.someone-else.tmp"  # not our naming: never touched
    for p in (live, foreign):
        p.write_bytes(b"not ours to delete")
    res = _pack(_trained_run_dir(tmp_path / "run"), out / "artifact.pgolf")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["artifact.pgolf", "artifact.pgolf.config.json", live.name, foreign.name]
    )


# ---------------------------------------------------------------- output paths


def _writers(tmp: Path, demo: Path, bad: Path) -> dict[str, list]:
    """Each writing command with ``bad`` as its output; inputs are dummies where the
    output check must come first."""
    tok = demo / "tokenizer.model"
    missing = tmp / "missing.pgolf"
    eval_in = ["--data", demo, "--tokenizer", tok]
    return {
        "data build": ["data", "build", "--demo", "--out", bad],
        "data fetch": ["data", "fetch", "--out", bad],
        "train": ["train", "--data", demo, "--tokenizer", tok, "--out", bad],
        "pack": ["pack", tmp / "no-run", "-o", bad],
        "pack --report": ["pack", tmp / "no-run", "-o", tmp / "a.pgolf", "--report", bad],
        "unpack": ["unpack", missing, "-o", bad],
        "inspect --plot": ["inspect", missing, "--plot", bad],
        "eval --report": ["eval", missing, *eval_in, "--report", bad],
        "eval --save-token-nll": ["eval", missing, *eval_in, "--save-token-nll", bad],
        "run": ["run", "--out", bad],
    }


FOLDER_OUTPUTS = {"data build", "data fetch", "train", "unpack", "run"}


@pytest.mark.parametrize("command", sorted(_writers(Path("x"), Path("y"), Path("z"))))
def test_wrong_kind_of_output_path_is_refused_first(tmp_path, demo, command):
    a_file = tmp_path / "occupied"
    a_file.write_bytes(b"mine")
    a_folder = tmp_path / "folder"
    a_folder.mkdir()
    (a_folder / "keep.txt").write_text("mine")
    if command in FOLDER_OUTPUTS:
        bad, needle = a_file, "is a file"  # a file where a folder is expected
    else:
        bad, needle = a_folder, "is a folder"  # the reverse
    refused(invoke(*_writers(tmp_path, demo, bad)[command]), needle)
    # Below a file: no folder can be made there either.
    refused(invoke(*_writers(tmp_path, demo, a_file / "sub" / "out")[command]), "is a file")
    assert a_file.read_bytes() == b"mine" and (a_folder / "keep.txt").read_text() == "mine"


def test_unwritable_folder_is_refused_before_eval(tmp_path, demo, monkeypatch):
    """Tests run as root, where chmod cannot make a folder unwritable: ask os.access instead."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: Path(p) != locked and real(p, m))
    args = _writers(tmp_path, demo, locked / "eval.json")["eval --report"]
    refused(invoke(*args), "cannot write in", "permission")


# ---------------------------------------------------------------- bad values early


def test_bad_values_are_refused_before_any_stage(tmp_path, demo):
    out = tmp_path / "run"
    res = invoke("run", "--out", out, "--ttt", "bogus")
    assert res.exit_code == 2 and "bogus" in res.output and "Traceback" not in res.output
    assert not out.exists()
    for value in ("inf", "nan", "-inf"):
        res = invoke("train", "--data", demo, "--tokenizer", demo / "tokenizer.model",
                     "--out", out, "--set", f"train.train_seconds={value}")  # fmt: skip
        refused(res, "train.train_seconds", "finite")
    refused(invoke("run", "--out", out, "--set", "eval.ttt_phase2_lr=nan"), "finite")
    refused(invoke("run", "--out", out, "--train-seconds", "inf"), "finite")
    assert not out.exists()


def test_missing_inputs_are_refused_before_any_stage(tmp_path, demo):
    out = tmp_path / "run"
    for args in (
        ("--input", tmp_path / "missing.jsonl"),
        ("--data", tmp_path / "no_such_dir"),
        ("--data", demo, "--tokenizer", tmp_path / "missing.model"),
    ):
        res = invoke("run", "--out", out, *args)
        assert res.exit_code == 2 and "does not exist" in res.output, res.output
        assert "Traceback" not in res.output
    assert not out.exists()


def test_a_build_without_a_val_split_is_refused(tmp_path):
    out = tmp_path / "data"
    res = invoke("data", "build", "--demo", "--out", out, "--val-docs", "0", "--no-progress")
    refused(res, "val_docs must be >= 1")
    assert not out.exists()


def test_export_checks_its_output_path_first(tmp_path):
    target = tmp_path / "records.txt"
    target.write_text("mine")
    who = ("--author", "A", "--github-id", "a", "--name", "N")
    res = invoke("export", tmp_path, "--out", target, *who)
    refused(res, "is a file")
    assert target.read_text() == "mine"
