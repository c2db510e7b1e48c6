"""Shared fixtures: where ../shared lives, and a tiny tokenizer trained once per session."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


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
