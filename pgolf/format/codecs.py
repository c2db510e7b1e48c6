"""Byte codecs and filters of the payload segments, each decode bounded by the declared size.

Every decoder is told the exact decompressed length the header declares and refuses to
produce one byte more (rule R12), so a 40-byte "decompression bomb" cannot exhaust memory.
"""

from __future__ import annotations

import lzma
import zlib

import brotli
import numpy as np
import zstandard

from pgolf.format import errors as E
from pgolf.format import rans

ZSTD_LEVEL = 22
BROTLI_QUALITY = 11
LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def compress(codec: str, data: bytes) -> bytes:
    if codec == "raw":
        return bytes(data)
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if codec == "brotli":
        return brotli.compress(bytes(data), quality=BROTLI_QUALITY)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
    if codec == "rans":
        return rans.encode(np.frombuffer(data, dtype=np.uint8))
    raise E.UnknownCodec(f"codec {codec!r} is not one of raw, zstd, brotli, lzma, rans")


def decompress(codec: str, data: bytes, raw_length: int, what: str) -> bytes:
    """Decode ``data`` to exactly ``raw_length`` bytes or raise R12/R13."""
    try:
        out = _decode(codec, data, raw_length, what)
    except E.FormatError:
        raise
    except (zstandard.ZstdError, brotli.error, lzma.LZMAError, zlib.error, ValueError) as e:
        raise E.CorruptStream(f"{what}: {codec} stream does not decode ({e})") from None
    if len(out) > raw_length:
        raise E.DecompressedSizeExceeded(
            f"{what}: {codec} stream decodes to more than the declared {raw_length} bytes"
        )
    if len(out) < raw_length:
        raise E.CorruptStream(
            f"{what}: {codec} stream decodes to {len(out)} bytes, header declares {raw_length}"
        )
    return out


def _decode(codec: str, data: bytes, raw_length: int, what: str) -> bytes:
    limit = raw_length + 1  # one byte more than allowed proves an overrun without decoding it all
    if codec == "raw":
        return bytes(data)
    if codec == "zstd":
        with zstandard.ZstdDecompressor().stream_reader(data) as reader:
            return reader.read(limit)
    if codec == "brotli":
        d = brotli.Decompressor()
        out = d.process(bytes(data), output_buffer_limit=limit)
        if len(out) < limit and not d.is_finished():
            raise E.CorruptStream(f"{what}: brotli stream ends early")
        return out
    if codec == "lzma":
        d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=LZMA_FILTERS)
        return d.decompress(data, max_length=limit)
    if codec == "rans":
        return rans.decode(data, raw_length, what).tobytes()
    raise E.UnknownCodec(f"{what}: codec {codec!r} is not one of raw, zstd, brotli, lzma, rans")


def apply_filter(name: str, data: bytes) -> bytes:
    """Byte-plane shuffle: element bytes regrouped by significance (zeros and exponents cluster)."""
    width = _filter_width(name)
    if width == 1:
        return bytes(data)
    arr = np.frombuffer(data, dtype=np.uint8)
    assert arr.size % width == 0, "filtered streams hold whole elements"
    return arr.reshape(-1, width).T.tobytes()


def undo_filter(name: str, data: bytes, what: str) -> bytes:
    width = _filter_width(name)
    if width == 1:
        return data
    arr = np.frombuffer(data, dtype=np.uint8)
    if arr.size % width:
        raise E.ShapeLengthMismatch(f"{what}: {arr.size} bytes is not a multiple of {width}")
    return arr.reshape(width, -1).T.tobytes()


def _filter_width(name: str) -> int:
    widths = {"none": 1, "shuffle2": 2, "shuffle4": 4}
    if name not in widths:
        raise E.UnknownFilter(f"filter {name!r} is not one of {', '.join(widths)}")
    return widths[name]
