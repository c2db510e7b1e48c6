"""Constants of the artifact container v1 (formats/artifact-v1.md is the normative text)."""

from __future__ import annotations

import re
import struct

MAGIC = b"\x89PGF\r\n\x1a\n"  # PNG-style: a text-mode transfer or a truncated copy breaks it.
MAJOR = 1  # Container layout version; a reader accepts exactly its own major.
MINOR = 0  # Additions a v1.0 reader may ignore (new optional header keys).
# Minor written by files that use the optional per-tensor ``lqer`` key (spec 1.2). A 1.0
# reader that ignores the key still refuses such a file (R23: its streams are unreferenced
# bytes to it), so it can never decode the weights without their correction.
MINOR_LQER = 1
SCHEME_VERSION = 1  # Meaning of the quantization schemes (intN = q * fp16 scale per row/group).

# Preamble: magic, major, minor, scheme version, header codec, reserved,
# header stored length, header raw length, payload length, payload crc32, header crc32.
PREAMBLE = struct.Struct("<8sHHHBBIIQII")
PREAMBLE_SIZE = PREAMBLE.size  # 40 bytes
HEADER_CRC_SPAN = PREAMBLE_SIZE - 4  # the header crc covers the preamble before it + the header

# Header codec ids in the preamble (payload segments name their codec in the header).
HEADER_CODECS = {0: "raw", 1: "zstd"}

# Caps: a hostile file must not make the reader allocate or loop without bound.
MAX_HEADER_BYTES = 16 << 20  # stored and decompressed header
MAX_TENSORS = 1 << 16
MAX_SEGMENTS = 1 << 17
MAX_NDIM = 8
MAX_NUMEL = 1 << 32  # elements per tensor
MAX_SEGMENT_RAW = 1 << 32  # decompressed bytes per segment
MAX_TOTAL_RAW = 1 << 34  # decompressed bytes over the whole artifact
MAX_NAME_CHARS = 256
# Spec 1.1 reader limits (R28, R29): what a file may make the reader decode is bounded by
# the file's own size, so a few hundred hostile bytes cannot ask for gigabytes or hours.
# 16 raw bytes per file byte is >= 0.5 bits per weight on average; the packer's real
# artifacts sit near 2 raw bytes per file byte. The floor keeps tiny test models readable.
DECODE_RATIO = 16
DECODE_FLOOR = 1 << 26  # 64 MiB
# rANS decodes one vectorised step per symbol of its longest lane. pgolf's writer uses
# K = min(65535, ceil(n / 4096)) lanes, i.e. at most 65,537 symbols a lane for any n < 2**32.
MAX_RANS_LANE_SYMBOLS = 1 << 17
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")

CODECS = ("raw", "zstd", "brotli", "lzma", "rans")
FILTERS = ("none", "shuffle2", "shuffle4")
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2}  # original dtype -> bytes per element
PASSTHROUGH = {"fp32": 4, "fp16": 2, "bf16": 2}  # passthrough scheme -> bytes per element
INT_BITS = range(2, 9)  # int2 .. int8
SCALE_DTYPES = {"float16": 2}


def decode_budget(file_bytes: int) -> int:
    """Most raw (decoded) segment bytes a file of ``file_bytes`` bytes may declare (R28)."""
    return max(DECODE_FLOOR, DECODE_RATIO * file_bytes)


def int_scheme_bits(scheme: str) -> int | None:
    """'int6' -> 6; None for passthrough or unknown schemes."""
    if scheme.startswith("int") and scheme[3:].isdigit():
        bits = int(scheme[3:])
        return bits if bits in INT_BITS else None
    return None


def is_known_scheme(scheme: str) -> bool:
    return scheme in PASSTHROUGH or int_scheme_bits(scheme) is not None
