"""Data section: how text becomes FineWeb-format token shards."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    # Documents at the head of the input order that form the val split; the challenge uses the
    # first 50,000 FineWeb documents, so the default matches it.
    val_docs: int = 50_000
    # Tokens per shard file before a new one starts (challenge shards hold 100M tokens).
    shard_tokens: int = 100_000_000
    # Vocabulary size when a tokenizer is trained (ignored when one is given). At least 320:
    # byte fallback needs 256 byte pieces + 4 specials before the first merge.
    vocab_size: int = 1024
    # Documents sampled (from the head of the train split) to train a tokenizer; bounded so
    # tokenizer training stays a few seconds even on large corpora.
    tokenizer_train_docs: int = 20_000
    # Longest document in characters fed to tokenizer training (SentencePiece's own limit).
    tokenizer_max_sentence_chars: int = 16_384
    # Worker processes for encoding; 0 means one per CPU core, 1 encodes in this process.
    workers: int = 0
    # Documents per work unit sent to a worker (large enough to amortise inter-process traffic).
    chunk_docs: int = 256
    # File-name prefix; "fineweb" gives the challenge layout fineweb_{train,val}_NNNNNN.bin.
    prefix: str = "fineweb"
    # JSON field holding the document text in .jsonl / .jsonl.zst inputs.
    text_field: str = "text"

    def __post_init__(self) -> None:
        if self.val_docs < 1:
            # Every later stage scores the val split: a build without one is lost work.
            raise ValueError(
                f"val_docs must be >= 1 (the val split is scored), got {self.val_docs}"
            )
        if self.shard_tokens < 1024:
            raise ValueError(f"shard_tokens must be >= 1024, got {self.shard_tokens}")
        if not 320 <= self.vocab_size <= 65_535:
            raise ValueError(
                "vocab_size must be in [320, 65535] (256 byte-fallback pieces + specials; "
                f"uint16 shards), got {self.vocab_size}"
            )
        if self.tokenizer_train_docs < 1:
            raise ValueError("tokenizer_train_docs must be >= 1")
        if self.tokenizer_max_sentence_chars < 64:
            raise ValueError("tokenizer_max_sentence_chars must be >= 64")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = one per core), got {self.workers}")
        if self.chunk_docs < 1:
            raise ValueError("chunk_docs must be >= 1")
        if not self.prefix or "/" in self.prefix:
            raise ValueError(f"prefix must be a plain file-name prefix, got {self.prefix!r}")


PRESETS: dict[str, dict[str, Any]] = {
    # The embedded demo corpus is small: hold out fewer documents and use a small vocabulary.
    "tiny": {"val_docs": 64, "vocab_size": 512, "shard_tokens": 200_000},
    # A tokenizer trained by `pgolf data build` for the record model: SP8192, as its embedding.
    "record": {"vocab_size": 8192},
}
