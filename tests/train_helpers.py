"""Fixtures for trainer tests: a tiny SentencePiece tokenizer and shards of learnable text.

The text comes from a small random grammar over a generated lexicon (no network, no shared
corpus), so a tiny model's loss has something to learn and the tokenizer reaches 512 pieces.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from pgolf.data.shards import shard_name, write_shard

SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]


def synthetic_docs(n_docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    nouns = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 3))) for _ in range(120)]
    verbs = ["".join(rng.choices(SYLLABLES, k=2)) + "s" for _ in range(40)]
    adjs = ["".join(rng.choices(SYLLABLES, k=2)) + "y" for _ in range(30)]
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(rng.randint(3, 8)):
            s = f"the {rng.choice(adjs)} {rng.choice(nouns)} {rng.choice(verbs)} the "
            s += f"{rng.choice(nouns)}"
            if rng.random() < 0.5:
                s += f" with {rng.randint(1, 99)} {rng.choice(nouns)}s"
            sentences.append(s.capitalize() + ".")
        docs.append(" ".join(sentences))
    return docs


def train_tokenizer(directory: Path, docs: list[str], vocab_size: int = 512) -> Path:
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    text = directory / "corpus.txt"
    text.write_text("\n".join(docs))
    prefix = directory / "tok"
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(prefix),
        vocab_size=vocab_size,
        model_type="bpe",
        bos_id=1,
        eos_id=-1,
        unk_id=0,
        pad_id=-1,
        byte_fallback=True,
        num_threads=1,
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def build_dataset(root: Path, n_train_docs: int = 1500, n_val_docs: int = 60) -> tuple[Path, Path]:
    """(data_dir, tokenizer_path) with two train shards and one val shard."""
    import sentencepiece as spm

    docs = synthetic_docs(n_train_docs + n_val_docs)
    tok = train_tokenizer(root / "tokenizer", docs[n_val_docs:])
    sp = spm.SentencePieceProcessor(model_file=str(tok))

    def stream(ds: list[str]) -> np.ndarray:
        return np.concatenate([np.array([1] + sp.encode(d), dtype=np.uint16) for d in ds])

    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    train = stream(docs[n_val_docs:])
    half = len(train) // 2
    write_shard(data / shard_name("fineweb", "train", 0), train[:half])
    write_shard(data / shard_name("fineweb", "train", 1), train[half:])
    write_shard(data / shard_name("fineweb", "val", 0), stream(docs[:n_val_docs]))
    (data / "manifest.json").write_text('{"note": "test fixture"}\n')
    return data, tok
