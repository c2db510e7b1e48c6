"""pgolf pack / unpack / inspect end to end on a tiny random checkpoint, and hostile files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pgolf.checkpoint import load_checkpoint, save_checkpoint
from pgolf.cli import cli
from pgolf.config import resolve
from pgolf.pack import codebytes
from pgolf.pack.synthetic import random_state


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    run = resolve("tiny")
    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(
        d,
        random_state(run.model, seed=2),
        run,
        tokenizer={"path": "x.model", "sha256": "ab" * 32, "vocab_size": 512},
    )
    return d


@pytest.fixture(scope="module")
def packed(ckpt: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("art") / "tiny.pgolf"
    res = CliRunner().invoke(
        cli,
        [
            "pack",
            str(ckpt),
            "-o",
            str(out),
            "--preset",
            "tiny",
            "--set",
            "pack.code_bytes=0",
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "search_table" in res.output and "chosen" in res.output
    # Where the time went, one greppable line per phase, then the totals.
    for phase in ("load", "code_bytes", "estimate", "quantize", "code", "write"):
        assert f"pack_phase:{phase} wall_s:" in res.output, phase
    assert "pack_phase:quantize wall_s:" in res.output and " pack:1 bits:" in res.output
    assert "pack_phases load_s:" in res.output and " real_packs:" in res.output
    return out


def test_pack_writes_artifact_and_config_sidecar(packed: Path) -> None:
    config = json.loads(Path(f"{packed}.config.json").read_text())
    assert config["pack"]["code_bytes"] == 0 and config["model"]["model_dim"] == 64


def test_unpack_gives_a_checkpoint_the_trainer_reads(packed: Path, ckpt: Path, tmp_path) -> None:
    res = CliRunner().invoke(cli, ["unpack", str(packed), "-o", str(tmp_path / "u")])
    assert res.exit_code == 0, res.output
    tensors, run, info = load_checkpoint(tmp_path / "u")
    original, orig_run, _ = load_checkpoint(ckpt)
    assert run.model == orig_run.model and set(tensors) == set(original)
    assert info["tokenizer"]["sha256"] == "ab" * 32
    for name, t in tensors.items():
        assert t.dtype == original[name].dtype and t.shape == original[name].shape
        err = float((t - original[name]).square().sum())
        assert err <= 0.02 * float(original[name].square().sum())


def test_inspect_table_json_and_plot(packed: Path, tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["inspect", str(packed)])
    assert res.exit_code == 0, res.output
    assert "tok_emb.weight" in res.output and "fits:true" in res.output
    res = runner.invoke(cli, ["inspect", str(packed), "--json", "--plot", str(tmp_path / "b.png")])
    s = json.loads(res.output)
    assert s["file_bytes"] == packed.stat().st_size
    assert sum(t["stored_bytes"] for t in s["tensors"]) == pytest.approx(s["payload_bytes"], 2)
    assert (tmp_path / "b.png").stat().st_size > 1000


def test_inspect_code_bytes_is_the_exported_script() -> None:
    res = CliRunner().invoke(cli, ["inspect", "--code-bytes", "--json", "--preset", "tiny"])
    m = json.loads(res.output)
    assert 0 < m["compressed_bytes"] < m["shipped_bytes"] < m["minified_bytes"] < m["source_bytes"]
    assert m["shipped_bytes"] == len(codebytes.measure(resolve("tiny")).text.encode())


def test_code_bytes_override_and_measure() -> None:
    from pgolf.pack.api import code_bytes_for

    run = resolve("tiny")
    assert code_bytes_for(resolve("tiny", ["pack.code_bytes=123"]).pack, run) == 123
    assert code_bytes_for(run.pack, run) == codebytes.measure(run).shipped_bytes


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "empty"])
@pytest.mark.parametrize("command", ["unpack", "inspect"])
def test_hostile_artifacts_give_one_line_errors(packed, tmp_path, damage, command) -> None:
    data = bytearray(packed.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x55
    elif damage == "magic":
        data[:4] = b"GGUF"
    else:
        data = bytearray()
    bad = tmp_path / "bad.pgolf"
    bad.write_bytes(bytes(data))
    args = [command, str(bad)] + (["-o", str(tmp_path / "o")] if command == "unpack" else [])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: invalid artifact (rule R")


def test_pack_budget_failure_exits_cleanly(ckpt, tmp_path) -> None:
    out = tmp_path / "x.pgolf"
    res = CliRunner().invoke(
        cli,
        [
            "pack",
            str(ckpt),
            "-o",
            str(out),
            "--preset",
            "tiny",
            "--budget",
            "5000",
            "--no-progress",
        ],
    )
    assert res.exit_code == 2 and "smallest reached is" in res.output
    assert not out.exists()


def test_pack_tokenizer_identity(shared_dir, tmp_path) -> None:
    tokenizer = shared_dir / "tokenizers" / "fineweb_1024_bpe.model"  # ../shared, as in CI
    run = resolve("tiny")
    run = dataclasses.replace(run, model=dataclasses.replace(run.model, vocab_size=1024))
    save_checkpoint(tmp_path / "c", random_state(run.model), run)
    out = tmp_path / "t.pgolf"
    res = CliRunner().invoke(
        cli,
        [
            "pack",
            str(tmp_path / "c"),
            "-o",
            str(out),
            "--preset",
            "tiny",
            "--tokenizer",
            str(tokenizer),
            "--no-progress",
            "--set",
            "pack.search=false",
            "--set",
            "pack.code_bytes=0",
        ],
    )
    assert res.exit_code == 0, res.output
    from pgolf.format import load_artifact

    art = load_artifact(out, tokenizer_path=tokenizer)
    assert art.tokenizer["vocab_size"] == 1024 and len(art.tokenizer["sha256"]) == 64
    assert isinstance(art.state["tok_emb.weight"], torch.Tensor)
