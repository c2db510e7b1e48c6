"""Shared fixtures for the evaluator's tests: a tiny tokenizer, model, val shards, artifacts."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pgolf.config import resolve
from pgolf.config.eval import EvalConfig
from pgolf.data.shards import write_shard
from pgolf.data.tokenizer import tokenizer_identity

REPO = Path(__file__).resolve().parents[1]
TINY = resolve("tiny")
# Tiny matrices gain nothing from threads, and 2 xdist workers on 2 cores must not oversubscribe.
torch.set_num_threads(1)
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "it",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "not",
    "but",
    "first",
    "one",
    "their",
    "its",
    "new",
    "after",
    "who",
    "they",
    "two",
    "have",
    "time",
    "also",
    "year",
    "city",
    "school",
    "world",
    "river",
    "music",
    "family",
    "history",
    "people",
    "state",
    "between",
    "during",
    "under",
    "small",
    "water",
    "light",
    "house",
    "north",
    "south",
    "early",
    "later",
    "music",
    "played",
    "known",
    "called",
    "became",
]  # noqa: SIM905


def synthetic_text(n_docs: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 60))]
        words[0] = words[0].capitalize()
        docs.append(
            " ".join(words) + f". In {rng.randint(1800, 2020)}, café №{rng.randint(1, 99)}."
        )
    return docs


def train_tiny_tokenizer(path: Path, vocab_size: int = 512, seed: int = 0) -> Path:
    from pgolf.data.spm_train import train_tokenizer

    train_tokenizer(synthetic_text(seed=seed), path, vocab_size, 4096)
    return path


@pytest.fixture(scope="session", name="tokenizer")
def tokenizer_fixture(tmp_path_factory) -> Path:
    return train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tiny.model")


def noisy_tiny_model(seed: int = 0, **model_overrides):
    """A tiny GPT whose zero-initialised paths are switched on (so every feature matters)."""
    from model_helpers import noisy_model

    return noisy_model(dataclasses.replace(TINY.model, **model_overrides), seed)


def random_stream(n: int, vocab: int = 512, seed: int = 0, bos_every: int = 97) -> np.ndarray:
    """Random ids with a BOS (1) every ``bos_every`` tokens, like concatenated documents."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, vocab, size=n).astype(np.uint16)
    tokens[::bos_every] = 1
    return tokens


def eval_cfg(**kw) -> EvalConfig:
    base = {"window": 32, "stride": 8, "batch_windows": 4, "device": "cpu"}
    base.update(kw)
    return dataclasses.replace(TINY.eval, **base)


def write_val(data_dir: Path, tokens: np.ndarray, shards: int = 2) -> Path:
    """Val split as ``shards`` files (the loader must concatenate them in order)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(tokens, shards)):
        write_shard(data_dir / f"fineweb_val_{i:06d}.bin", part)
    return data_dir


def save_run_dir(run_dir: Path, model, tokenizer_path: Path | None) -> Path:
    from pgolf.checkpoint import save_checkpoint

    config = dataclasses.replace(TINY, model=model.cfg)
    ident = tokenizer_identity(tokenizer_path) if tokenizer_path else None
    save_checkpoint(run_dir, model.state_dict(), config, tokenizer=ident)
    return run_dir


def write_fp32_artifact(path: Path, model, tokenizer_path: Path) -> Path:
    """A real container holding the model's tensors as fp32 (no quantization needed)."""
    from pgolf.config.base import to_dict
    from pgolf.format.writer import EncodedTensor, SegmentPlan, build

    tensors = [
        EncodedTensor(name, tuple(t.shape), "float32", "fp32", t.float().numpy().tobytes())
        for name, t in model.state_dict().items()
    ]
    plan = [SegmentPlan("zstd", "none", tuple((t.name, "values") for t in tensors))]
    ident = tokenizer_identity(tokenizer_path)
    tok = {"sha256": ident["sha256"], "vocab_size": ident["vocab_size"]}
    blob = build(tensors, plan, model=to_dict(model.cfg), tokenizer=tok)
    path.write_bytes(blob)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_eval_processes(args: list[str], world: int, cwd: Path) -> list[subprocess.CompletedProcess]:
    """Launch ``pgolf eval ARGS`` as ``world`` gloo ranks, like torchrun does."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-c", "from pgolf.eval.cli import main; main()", *args]
        procs.append(
            subprocess.Popen(
                cmd, env=env, cwd=cwd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def read_report(path: Path) -> dict:
    return json.loads(path.read_text())


def on_one_and_two_ranks(
    tmp_path: Path, art: Path, data: Path, tokenizer: Path, flags: list[str]
) -> dict[int, tuple[dict, np.ndarray]]:
    """world -> (report, per-token NLLs) of ``pgolf eval ART FLAGS`` on 1 and on 2 gloo ranks."""
    out = {}
    for world in (1, 2):
        report, nll_path = tmp_path / f"r{world}.json", tmp_path / f"n{world}.npy"
        args = [str(art), "--data", str(data), "--tokenizer", str(tokenizer),
                "--report", str(report), "--save-token-nll", str(nll_path), *flags]  # fmt: skip
        for p in run_eval_processes(args, world, REPO):
            assert p.returncode == 0, p.stderr
        out[world] = (read_report(report), np.load(nll_path))
    return out
