"""Training a SentencePiece BPE tokenizer shaped like the challenge's own.

The id layout mirrors ``fineweb_*_bpe.model`` (pad 0, BOS 1, EOS 2, unk 3), so a model
trained here drops into every place that takes a challenge tokenizer. Byte fallback is on:
rare characters become byte tokens (1 byte each in the bpb tables) instead of ``<unk>``,
which would silently drop their bytes from the score.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pgolf.errors import DataError
from pgolf.io import atomic_write_bytes

# 256 byte pieces + pad/BOS/EOS/unk must fit, with room left for real merges.
MIN_TRAINED_VOCAB = 320


def training_settings(vocab_size: int, max_sentence_chars: int) -> dict[str, Any]:
    """Every SentencePiece trainer flag we set; recorded verbatim in manifest.json."""
    return {
        "model_type": "bpe",
        "vocab_size": vocab_size,
        "byte_fallback": True,
        # Characters below this coverage go to byte fallback rather than the vocabulary.
        "character_coverage": 0.9995,
        "pad_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "unk_id": 3,
        "normalization_rule_name": "nmt_nfkc",
        "add_dummy_prefix": True,
        "remove_extra_whitespaces": True,
        "split_digits": True,
        "max_sentence_length": max_sentence_chars,
        # No sampling and no shuffling: the same documents always give the same model bytes.
        "input_sentence_size": 0,
        "shuffle_input_sentence": False,
        "hard_vocab_limit": True,
        "num_threads": 1,
    }


def _sentences(docs: Iterable[str], max_chars: int, stats: dict[str, int]) -> Iterator[str]:
    for doc in docs:
        # SentencePiece skips (not truncates) over-long sentences; truncating keeps their text.
        doc = doc[:max_chars]
        if doc.strip():
            stats["docs"] += 1
            stats["chars"] += len(doc)
            yield doc


def train_tokenizer(
    docs: Iterable[str], out_path: str | Path, vocab_size: int, max_sentence_chars: int
) -> dict[str, Any]:
    """Train on ``docs`` and write the .model atomically; returns the settings and input sizes."""
    import sentencepiece as spm

    if vocab_size < MIN_TRAINED_VOCAB:
        raise DataError(
            f"vocab_size {vocab_size} is too small to train a byte-fallback tokenizer; "
            f"use at least {MIN_TRAINED_VOCAB} (256 byte pieces + 4 specials + merges)"
        )
    settings = training_settings(vocab_size, max_sentence_chars)
    stats = {"docs": 0, "chars": 0}
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_sentences(docs, max_sentence_chars, stats),
            model_writer=model,
            minloglevel=2,
            **settings,
        )
    except RuntimeError as e:
        raise DataError(
            f"tokenizer training failed for {out_path} with vocab_size {vocab_size} on "
            f"{stats['docs']} documents ({e}); give more text or a smaller --vocab-size"
        ) from None
    if stats["docs"] == 0:
        raise DataError("no non-empty documents to train the tokenizer on")
    atomic_write_bytes(out_path, model.getvalue())
    return {"settings": settings, "train_docs": stats["docs"], "train_chars": stats["chars"]}
