"""Exact bits-per-byte accounting: per-token UTF-8 byte tables from a SentencePiece model.

The challenge's rule, per scored target token t with previous token p:

    bytes(p, t) = base_bytes[t] + (has_leading_space[t] and not is_boundary[p])

* base_bytes: the piece's UTF-8 bytes without its leading "▁" (an inner "▁" decodes to
  one space byte); byte-fallback pieces ``<0xAB>`` are exactly 1 byte; control, unknown
  and unused pieces (BOS included) are 0 bytes.
* The leading "▁" is a space only when something precedes it in the decoded text: after
  a boundary token (control/unknown/unused, e.g. BOS) the decoder drops it, so it adds
  nothing. This is why the first token after BOS never pays for its space.

Summing ``bytes`` over a stream's targets (every token but the first) gives the exact
UTF-8 length of the text the stream decodes to, segment by segment (tests check that
against ``decode`` on real documents and the challenge's tokenizers).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

SPACE_MARK = "\u2581"  # "▁", SentencePiece's whitespace marker


@dataclasses.dataclass(frozen=True)
class ByteTable:
    base_bytes: np.ndarray  # int16[vocab]
    has_leading_space: np.ndarray  # bool[vocab]
    is_boundary: np.ndarray  # bool[vocab]

    @property
    def vocab_size(self) -> int:
        return int(self.base_bytes.size)

    @classmethod
    def from_processor(cls, sp: Any) -> ByteTable:
        vocab = sp.vocab_size()
        base = np.zeros(vocab, dtype=np.int16)
        lead = np.zeros(vocab, dtype=bool)
        boundary = np.zeros(vocab, dtype=bool)
        for i in range(vocab):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                boundary[i] = True
                continue
            if sp.is_byte(i):
                base[i] = 1
                continue
            piece = sp.id_to_piece(i)
            if piece.startswith(SPACE_MARK):
                lead[i] = True
                piece = piece[1:]
            base[i] = len(piece.replace(SPACE_MARK, " ").encode("utf-8"))
        return cls(base, lead, boundary)

    @classmethod
    def from_model(cls, path: str | Path) -> ByteTable:
        from pgolf.data.tokenizer import load_tokenizer

        return cls.from_processor(load_tokenizer(path))

    def target_bytes(self, prev_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Bytes of each target ``ids[i]`` given its predecessor ``prev_ids[i]`` (int64)."""
        ids = np.asarray(ids, dtype=np.int64)
        prev_ids = np.asarray(prev_ids, dtype=np.int64)
        extra = self.has_leading_space[ids] & ~self.is_boundary[prev_ids]
        return self.base_bytes[ids].astype(np.int64) + extra

    def stream_bytes(self, tokens: np.ndarray, chunk: int = 1 << 24) -> int:
        """Bytes of every target of a token stream (all tokens but the first), exactly."""
        total = 0
        for start in range(1, len(tokens), chunk):
            end = min(start + chunk, len(tokens))
            total += int(self.target_bytes(tokens[start - 1 : end - 1], tokens[start:end]).sum())
        return total

    def torch_tables(self, device: Any = "cpu") -> tuple[Any, Any, Any]:
        """(base_bytes int32, has_leading_space bool, is_boundary bool) tensors on ``device``."""
        import torch

        return (
            torch.as_tensor(self.base_bytes.astype(np.int32), device=device),
            torch.as_tensor(self.has_leading_space, device=device),
            torch.as_tensor(self.is_boundary, device=device),
        )


def target_bytes_torch(tables: tuple[Any, Any, Any], prev_ids: Any, ids: Any) -> Any:
    """Torch twin of ``ByteTable.target_bytes`` for on-device scoring (int32 result)."""
    base, lead, boundary = tables
    return base[ids] + (lead[ids] & ~boundary[prev_ids]).to(base.dtype)
