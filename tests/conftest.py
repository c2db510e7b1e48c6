"""Shared fixtures: where ../shared lives, and a tiny tokenizer trained once per session."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """One CPU thread per process under pytest-xdist: every worker, and every train, eval and
    pack process a test starts (runtime.cpu_share reads PGOLF_CPU_THREADS), would otherwise
    take every core, and oversubscribed OpenMP threads spin: a 2-core CI run of the suite took
    23 min instead of ~4."""
    if hasattr(config, "workerinput"):
        import torch

        os.environ.setdefault("PGOLF_CPU_THREADS", "1")
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (corpus + challenge tokenizers); tests that need it skip when it is absent."""
    if not (SHARED / "corpus").is_dir() or not (SHARED / "tokenizers").is_dir():
        pytest.skip(f"{SHARED} (corpus and tokenizers) not found")
    return SHARED


@pytest.fixture(scope="session")
def demo_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 512-piece byte-fallback BPE model trained on ~150 demo documents (<1 s)."""
    from pgolf.data.demo import topic_documents
    from pgolf.data.spm_train import train_tokenizer

    path = tmp_path_factory.mktemp("demo_tok") / "demo_512.model"
    docs = (text for _, text in itertools.islice(topic_documents(), 150))
    train_tokenizer(docs, path, vocab_size=512, max_sentence_chars=16_384)
    return path
