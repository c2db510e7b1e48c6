"""`pgolf eval`: artifacts and run dirs end to end, reports, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from eval_helpers import (  # noqa: F401
    REPO,
    noisy_tiny_model,
    random_stream,
    read_report,
    save_run_dir,
    tokenizer_fixture,
    train_tiny_tokenizer,
    write_fp32_artifact,
    write_val,
)

from pgolf.cli import cli
from pgolf.data.bpb import ByteTable

FAST = ["--preset", "tiny", "--set", "eval.window=32", "--set", "eval.stride=16",
        "--set", "eval.device=cpu", "--set", "eval.ttt_chunk_tokens=64",
        "--set", "eval.ttt_seq_len=32"]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("evalcli")
    model = noisy_tiny_model()
    tokens = random_stream(300, seed=7)
    return {
        "root": root,
        "tokens": tokens,
        "data": write_val(root / "data", tokens),
        "run": save_run_dir(root / "run", model, tokenizer),
        "artifact": write_fp32_artifact(root / "model.pgolf", model, tokenizer),
        "tokenizer": tokenizer,
    }


def invoke(*args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)], catch_exceptions=False)


def test_artifact_and_run_dir_give_the_same_score(setup, tmp_path):
    s = setup
    reports = {}
    for name in ("artifact", "run"):
        out = tmp_path / f"{name}.json"
        nll = tmp_path / f"{name}.npy"
        res = invoke(s[name], "--data", s["data"], "--tokenizer", s["tokenizer"], *FAST,
                     "--report", out, "--save-token-nll", nll)  # fmt: skip
        assert res.exit_code == 0, res.output
        assert "val_bpb:" in res.output and "compliant:true" in res.output
        reports[name] = read_report(out)
        assert np.load(nll).shape == (len(s["tokens"]) - 1,)
    a, r = reports["artifact"], reports["run"]
    assert a["val_bpb"] == pytest.approx(r["val_bpb"], rel=1e-6)
    assert a["artifact_kind"] == "artifact" and r["artifact_kind"] == "checkpoint"
    assert a["tokens_scored"] == len(s["tokens"]) - 1
    assert a["bytes_scored"] == ByteTable.from_model(s["tokenizer"]).stream_bytes(s["tokens"])
    assert a["artifact_bytes"] == s["artifact"].stat().st_size
    assert a["ttt"] == "two-phase" and a["ttt_steps"] > 0 and a["world_size"] == 1
    for key in ("time_load_s", "time_compile_s", "time_ttt_s", "time_score_s", "time_total_s"):
        assert a[key] >= 0


def test_no_ttt_research_mode_and_max_tokens(setup, tmp_path):
    s = setup
    base = [s["artifact"], "--data", s["data"], "--tokenizer", s["tokenizer"], *FAST]
    res = invoke(*base, "--ttt", "none", "--max-tokens", 100, "--report", tmp_path / "n.json")
    report = read_report(tmp_path / "n.json")
    assert res.exit_code == 0 and report["ttt_steps"] == 0 and report["tokens_scored"] == 99
    assert report["full_split"] is False and report["max_tokens"] == 100
    # The kernels that scored it ("auto" resolved here, on a CPU).
    assert (report["attention"], report["mlp_kernel"]) == ("sdpa", "torch")
    res = invoke(*base, "--ttt", "pre-train-on-val", "--report", tmp_path / "r.json")
    assert res.exit_code == 0 and "compliant:false" in res.output
    assert read_report(tmp_path / "r.json")["compliant"] is False


def one_line_error(res, *needles):
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_tokenizer_problems(setup, tmp_path):
    s = setup
    other = train_tiny_tokenizer(tmp_path / "other.model", seed=1)  # same vocab, other sha
    small = train_tiny_tokenizer(tmp_path / "small.model", vocab_size=384)
    data = ["--data", s["data"], *FAST]
    one_line_error(invoke(s["artifact"], *data), "tokenizer is required")
    one_line_error(invoke(s["artifact"], *data, "--tokenizer", tmp_path / "nope.model"),
                   "not found")  # fmt: skip
    one_line_error(invoke(s["artifact"], *data, "--tokenizer", other), "sha256")
    one_line_error(invoke(s["run"], *data, "--tokenizer", other), "sha256")
    one_line_error(invoke(s["artifact"], *data, "--tokenizer", small), "vocab")


def test_corrupted_artifacts(setup, tmp_path):
    s = setup
    args = ["--data", s["data"], "--tokenizer", s["tokenizer"], *FAST]
    blob = s["artifact"].read_bytes()
    (tmp_path / "trunc.pgolf").write_bytes(blob[: len(blob) - 10])
    one_line_error(invoke(tmp_path / "trunc.pgolf", *args), "invalid artifact")
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF
    (tmp_path / "flip.pgolf").write_bytes(bytes(flipped))
    one_line_error(invoke(tmp_path / "flip.pgolf", *args), "invalid artifact")
    (tmp_path / "junk.pgolf").write_bytes(b"not an artifact at all")
    one_line_error(invoke(tmp_path / "junk.pgolf", *args), "invalid artifact")
    one_line_error(invoke(tmp_path / "missing.pgolf", *args), "no such")


def test_val_problems(setup, tmp_path):
    s = setup
    args = [s["artifact"], "--tokenizer", s["tokenizer"], *FAST]
    short = write_val(tmp_path / "short", random_stream(32), shards=1)  # window 32 needs 33
    one_line_error(invoke(*args, "--data", short), "fewer than one window")
    one_line_error(invoke(*args, "--data", s["data"], "--max-tokens", 20), "--max-tokens")
    (tmp_path / "empty").mkdir()
    one_line_error(invoke(*args, "--data", tmp_path / "empty"), "no val shards")
    wide = write_val(tmp_path / "wide", random_stream(100, vocab=600), shards=1)
    one_line_error(invoke(*args, "--data", wide), "vocab size")


def test_bad_settings_are_rejected_before_any_work(setup):
    s = setup
    args = [s["artifact"], "--data", s["data"], "--tokenizer", s["tokenizer"], *FAST]
    one_line_error(invoke(*args, "--set", "eval.stride=0"), "stride")
    one_line_error(invoke(*args, "--set", "eval.ttt_phase2_momentum=1.5"), "momentum")
    one_line_error(invoke(*args, "--set", "eval.ttt_phase2_lrr=1"), "did you mean")


def test_evaluator_never_imports_train_or_pack():
    code = (
        "import sys, pgolf.eval.cli, pgolf.eval.evaluate, pgolf.eval.engine, pgolf.eval.load\n"
        "import pgolf.format, pgolf.checkpoint\n"
        "bad = [m for m in sys.modules if m.startswith(('pgolf.train', 'pgolf.pack'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_bin_entry_point_reports_errors_in_one_line(setup, tmp_path):
    res = subprocess.run(
        [sys.executable, str(REPO / "bin" / "pgolf-eval"), str(tmp_path / "x.pgolf"),
         "--data", str(setup["data"]), "--tokenizer", str(setup["tokenizer"]), *FAST],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 2 and res.stderr.strip().startswith("error:"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
