"""End-to-end trainer runs on CPU: learning, exact resume, wall-clock cap, NaN stop, DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import build_dataset

from pgolf.checkpoint import load_checkpoint
from pgolf.config import resolve
from pgolf.train import loop
from pgolf.train.loop import TrainingDiverged, train
from pgolf.train.state import load_resume

REPO = Path(__file__).resolve().parents[1]
# Small enough for 2 busy CPU cores: 2 micro-batches of 4 x 64 tokens per step.
FAST = [
    "train.train_seconds=1e6",
    "train.seq_len=64",
    "train.global_batch_tokens=512",
    "train.micro_batch_seqs=4",
    "train.val_every_steps=0",
    "train.val_tokens=2048",
    "train.final_val_tokens=2048",
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(tmp_path_factory.mktemp("data"))


def cfg(*extra: str):
    return resolve("tiny", FAST + list(extra))


def losses(history):
    return [h["train_loss"] for h in history if "train_loss" in h]


def test_tiny_run_learns_and_writes_a_complete_run_dir(dataset, tmp_path):
    data, tok = dataset
    out = tmp_path / "run"
    summary = train(cfg("train.max_steps=30", "train.val_every_steps=15"), data, tok, out)
    _, meta = load_resume(out)
    ls = losses(meta["history"])
    assert len(ls) == 30
    assert sum(ls[-5:]) / 5 < sum(ls[:3]) / 3 - 1.0, ls
    assert summary["val_bpb_raw"] < 2.5  # 4.9 nats over ~2.3 bytes/token at init
    state, config, info = load_checkpoint(out)
    assert config.model.vocab_size == 512 and info["extra"]["step"] == 30
    assert info["tokenizer"]["vocab_size"] == 512
    assert all(t.dtype == torch.float32 for t in state.values())
    assert (out / "loss_curve.png").stat().st_size > 1000
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    trains = [r for r in records if "train_loss" in r]
    assert {"tokens_per_s", "step_avg_ms", "mfu", "lr_scale", "peak_mem_gib"} <= set(trains[0])
    assert any(r.get("event") == "val" for r in records)
    assert any(r.get("event") == "qat_on" for r in records)
    assert not list(out.glob("*.tmp")) and not list(out.glob("*.pt"))


def test_resume_reproduces_the_uninterrupted_run_exactly(dataset, tmp_path):
    data, tok = dataset
    steps = [
        "train.max_steps=6",
        "train.checkpoint_every_steps=3",
        "train.averaging=swa",
        "train.swa_every_steps=1",
        "train.swa_lr_threshold=0.9",
    ]
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg(*steps), data, tok, full)
    killed = train(cfg(*steps), data, tok, part, stop_after_step=4)  # last save at step 3
    assert killed == {"stopped_at": 4}
    assert load_resume(part)[1]["step"] == 3
    train(cfg(*steps), data, tok, part, resume=True)
    a, b = load_resume(full), load_resume(part)
    assert losses(a[1]["history"]) == losses(b[1]["history"])
    assert a[1]["swa_count"] == b[1]["swa_count"] > 0
    for key, tensor in a[0].items():
        assert torch.equal(tensor, b[0][key]), key
    wa, wb = load_checkpoint(full)[0], load_checkpoint(part)[0]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_run_ends_at_the_wall_clock_cap(dataset, tmp_path):
    data, tok = dataset
    c = cfg("train.train_seconds=4", "train.warmdown_frac=0.5", "train.log_every_steps=1")
    summary = train(c, data, tok, tmp_path / "run")
    records = [
        json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
    ]
    trains = [r for r in records if "train_loss" in r]
    # The loop stops at the first step that ends at/after the cap: the previous one ended
    # before it, and each step's lr scale is the time-based warmdown at its start.
    assert summary["train_s"] >= 4.0 and trains[-1]["train_s"] == summary["train_s"]
    prev = [0.0] + [r["train_s"] for r in trains[:-1]]
    assert prev[-1] < 4.0
    for r, start in zip(trains, prev, strict=True):
        assert r["lr_scale"] == pytest.approx(min(1.0, (4.0 - start) / 2.0), abs=1e-3)
    # The run line names the kernels "auto" resolved to: on this CPU, SDPA and the torch MLP.
    (run,) = [r for r in records if r.get("event") == "run"]
    assert (run["attention"], run["mlp_kernel"]) == ("sdpa", "torch")


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(
    dataset, tmp_path, monkeypatch
):
    data, tok = dataset
    real = loop.Trainer._train_step

    def poisoned(self, batches, lr_scale, momentum):
        loss = real(self, batches, lr_scale, momentum)
        return loss * float("nan") if self.step >= 3 else loss

    monkeypatch.setattr(loop.Trainer, "_train_step", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="non-finite at step 4"):
        train(cfg("train.max_steps=10", "train.checkpoint_every_steps=2"), data, tok, out)
    assert load_checkpoint(out)[2]["extra"]["step"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_equals_one_process_with_accumulation(dataset, tmp_path):
    data, tok = dataset
    sets = ["train.max_steps=3", "train.global_batch_tokens=512", "train.micro_batch_seqs=4"]
    one = tmp_path / "one"
    train(cfg(*sets), data, tok, one)  # world 1: accumulation 2
    port = _free_port()
    args = [
        sys.executable,
        str(REPO / "bin" / "pgolf-train"),
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--tokenizer",
        str(tok),
        "--out",
        str(tmp_path / "two"),
    ]
    for s in FAST + sets:
        args += ["--set", s]
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            OMP_NUM_THREADS="1",
            PYTHONPATH=str(REPO),
        )
        procs.append(
            subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert "accumulation:1" in outs[0] and "world_size:2" in outs[0]
    a, b = load_resume(one), load_resume(tmp_path / "two")
    assert b[1]["world_size"] == 2
    # Not bit-exact (the all-reduce sums in another order), but Muon's Newton-Schulz runs in
    # fp32 on CPU so nothing amplifies that rounding: measured max difference ~2e-6. A data
    # split or averaging bug shows up as 1e-2 and more.
    torch.testing.assert_close(losses(a[1]["history"]), losses(b[1]["history"]), rtol=0, atol=1e-5)
    for key in a[0]:
        torch.testing.assert_close(a[0][key], b[0][key], rtol=0, atol=2e-5, msg=key)
