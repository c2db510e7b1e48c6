"""Exact bpb byte accounting against a brute-force decode, on real text and real tokenizers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pgolf.data.bpb import ByteTable, target_bytes_torch
from pgolf.data.corpus import iter_documents
from pgolf.data.spm_train import train_tokenizer
from pgolf.data.tokenizer import load_tokenizer

N_DOCS = 2500


@pytest.fixture(scope="module")
def docs(shared_dir):
    path = shared_dir / "corpus" / "docs_000.jsonl.zst"
    return list(itertools.islice(iter_documents([path]), N_DOCS))


@pytest.fixture(scope="module")
def corpus_tokenizer(docs, tmp_path_factory):
    """Trained here on the same corpus (byte fallback on), unlike the challenge's 1024 model."""
    path = tmp_path_factory.mktemp("tok") / "corpus_1024.model"
    train_tokenizer(docs[:1500], path, vocab_size=1024, max_sentence_chars=16_384)
    return path


def brute_force_bytes(sp, ids: list[int]) -> int:
    """Split at boundary tokens and sum UTF-8 lengths of each segment's decode.

    The decoder drops a segment's leading space, which is exactly the bpb rule; splitting at
    boundaries keeps <unk> from decoding to " ⁇ " and counting bytes that were never there.
    """
    total, segment = 0, []
    for i in ids:
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            total += len(sp.decode(segment).encode("utf-8")) if segment else 0
            segment = []
        else:
            segment.append(i)
    return total + (len(sp.decode(segment).encode("utf-8")) if segment else 0)


def check_corpus(model_path, docs) -> dict[str, int]:
    sp = load_tokenizer(model_path)
    table = ByteTable.from_processor(sp)
    bos = sp.bos_id()
    encoded = [[bos, *ids] for ids in sp.encode(docs)]
    for ids in encoded:  # per document first: a mismatch names the document
        assert table.stream_bytes(np.array(ids)) == brute_force_bytes(sp, ids), sp.decode(ids)
    stream = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.uint16)
    total = table.stream_bytes(stream)
    assert total == sum(brute_force_bytes(sp, ids) for ids in encoded)
    unk = int(np.count_nonzero(stream == sp.unk_id()))
    byte_tokens = int(sum(sp.is_byte(int(i)) for i in np.unique(stream)))
    return {"bytes": total, "unk": unk, "distinct_byte_tokens": byte_tokens}


def test_fineweb_1024_matches_brute_force(shared_dir, docs):
    stats = check_corpus(shared_dir / "tokenizers" / "fineweb_1024_bpe.model", docs)
    # No byte fallback: rare characters become <unk>, so the segment split is exercised.
    assert stats["unk"] > 100
    assert stats["distinct_byte_tokens"] == 0


def test_fineweb_8192_matches_brute_force(shared_dir, docs):
    stats = check_corpus(shared_dir / "tokenizers" / "fineweb_8192_bpe.model", docs)
    assert stats["unk"] == 0
    assert stats["distinct_byte_tokens"] > 5  # byte fallback is exercised


def test_self_trained_matches_brute_force(corpus_tokenizer, docs):
    stats = check_corpus(corpus_tokenizer, docs)
    assert stats["unk"] == 0
    assert stats["distinct_byte_tokens"] > 5


# --- the known pitfalls, each pinned on a hand-built sequence -------------------------------


@pytest.fixture(scope="module")
def sp1024(shared_dir):
    return load_tokenizer(shared_dir / "tokenizers" / "fineweb_1024_bpe.model")


@pytest.fixture(scope="module")
def sp8192(shared_dir):
    return load_tokenizer(shared_dir / "tokenizers" / "fineweb_8192_bpe.model")


def _bytes(sp, ids) -> int:
    return ByteTable.from_processor(sp).stream_bytes(np.array(ids))


def test_leading_space_counts_once_and_not_after_bos(sp1024):
    the = sp1024.piece_to_id("\u2581the")
    bos = sp1024.bos_id()
    table = ByteTable.from_processor(sp1024)
    assert table.base_bytes[the] == 3 and table.has_leading_space[the]
    # First token after BOS: the decoder drops its space, so 3 bytes, not 4.
    assert _bytes(sp1024, [bos, the]) == 3 == len(sp1024.decode([the]))
    # After a normal token: one space byte + "the"; the "▁" (3 UTF-8 bytes) is never counted
    # as itself, and the space never twice.
    assert _bytes(sp1024, [bos, the, the]) == 3 + 4 == len(sp1024.decode([the, the]).encode())


def test_byte_fallback_tokens_count_one_byte(sp8192):
    table = ByteTable.from_processor(sp8192)
    e2 = sp8192.piece_to_id("<0xE2>")
    assert sp8192.is_byte(e2) and table.base_bytes[e2] == 1  # not len("<0xE2>") nor 3
    text = "a \U0001f980 b"  # a rare emoji (NFKC-stable) goes through byte fallback
    ids = [sp8192.bos_id(), *sp8192.encode(text)]
    assert sum(sp8192.is_byte(i) for i in ids) == 4
    assert _bytes(sp8192, ids) == len(text.encode("utf-8"))


def test_unknown_and_control_tokens_count_zero(sp1024):
    table = ByteTable.from_processor(sp1024)
    for special in (sp1024.unk_id(), sp1024.bos_id(), sp1024.eos_id(), sp1024.pad_id()):
        assert table.base_bytes[special] == 0 and table.is_boundary[special]
    ids = [sp1024.bos_id(), *sp1024.encode("tea \u6f22 time")]
    assert sp1024.unk_id() in ids
    # The decoder renders <unk> as " ⁇ ": counting that would add bytes that never existed.
    naive = len(sp1024.decode(ids).encode("utf-8"))
    exact = _bytes(sp1024, ids)
    # "tea" + the lone "▁" before <unk> + "time" without its space (it follows a boundary).
    assert exact == brute_force_bytes(sp1024, ids) == len("tea ") + len("time")
    assert naive > exact
    # The token after <unk> starts a new segment: its leading space is not counted.
    after = ids[ids.index(sp1024.unk_id()) + 1]
    assert table.has_leading_space[after]


def test_first_token_of_stream_is_not_a_target(sp1024):
    the = sp1024.piece_to_id("\u2581the")
    # stream_bytes scores every token but the first: a lone token has no target.
    assert _bytes(sp1024, [the]) == 0
    assert _bytes(sp1024, []) == 0


def test_stream_bytes_chunking_and_torch_twin(sp8192, docs):
    import torch

    table = ByteTable.from_processor(sp8192)
    ids = [sp8192.bos_id()]
    for doc in docs[:50]:
        ids += [sp8192.bos_id(), *sp8192.encode(doc)]
    stream = np.array(ids, dtype=np.uint16)
    whole = table.stream_bytes(stream)
    assert table.stream_bytes(stream, chunk=7) == whole
    t = torch.as_tensor(stream.astype(np.int64))
    assert int(target_bytes_torch(table.torch_tables(), t[:-1], t[1:]).sum()) == whole


def test_from_model_reports_missing_file(tmp_path):
    from pgolf.errors import DataError

    with pytest.raises(DataError, match="not found"):
        ByteTable.from_model(tmp_path / "missing.model")
