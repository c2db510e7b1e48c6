"""The plain recipe competitors start from, as the baseline our packer must beat.

int6 per-row (amax scales, no clip search) for block matrices, int8 per-row for embeddings,
fp16 for everything else, all streams concatenated in name order and zstd-22 compressed
as one blob. (Competitors torch.save the state first; raw bytes are the pickle-free
equivalent and slightly smaller.)
"""

from __future__ import annotations

import torch

from pgolf.config.pack import PackConfig
from pgolf.format import codecs, schemes
from pgolf.pack import quantize as Q


def plain_pack(
    tensors: dict[str, torch.Tensor], cfg: PackConfig | None = None
) -> tuple[int, dict[str, torch.Tensor]]:
    """(zstd-22 bytes of the whole quantized state, its dequantized tensors)."""
    cfg = cfg or PackConfig()
    parts, out = [], {}
    one = torch.ones(1)
    for name in sorted(tensors):
        w = tensors[name]
        cls = Q.classify(name, w, cfg)
        bits = {"attn": 6, "mlp": 6, "embed": 8}.get(cls)
        if bits is None:
            blob = schemes.encode_passthrough(w, "fp16")
            parts.append(blob)
            out[name] = schemes.decode_passthrough_bytes(blob, "fp16").reshape(w.shape)
            continue
        qt = Q.quantize(w, bits, 0, one)
        values, scales = schemes.encode_int(qt.q, qt.scales)
        parts += [values, scales]
        out[name] = qt.dequantize().reshape(w.shape)
    return len(codecs.compress("zstd", b"".join(parts))), out
