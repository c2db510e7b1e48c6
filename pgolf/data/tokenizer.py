"""Loading SentencePiece models and naming them by content (sha256), never by path."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pgolf.errors import DataError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_tokenizer(path: str | Path) -> Any:
    """A SentencePieceProcessor, or a DataError naming the file and the problem."""
    import sentencepiece as spm

    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: tokenizer model not found (pass --tokenizer PATH to a .model file)"
        )
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError) as e:
        raise DataError(f"{path}: not a SentencePiece model ({e})") from None


def tokenizer_identity(path: str | Path) -> dict[str, Any]:
    """What artifacts and manifests record about a tokenizer: path, sha256, vocab size, BOS id."""
    sp = load_tokenizer(path)
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "vocab_size": int(sp.vocab_size()),
        "bos_id": int(sp.bos_id()),
    }
