"""Byte layout of the container: preamble, (compressed) JSON header, contiguous payload.

``assemble`` and ``parse`` are the only places that know byte positions. ``parse`` runs
the file-level rules (R1-R14, R24) in spec order; ``pgolf.format.header`` checks the
header's contents and ``pgolf.format.reader`` the streams.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Any

from pgolf.format import errors as E
from pgolf.format import spec
from pgolf.format.codecs import compress, decompress


def dumps_header(header: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no spaces, so equal content gives equal bytes."""
    return json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def assemble(
    header: dict[str, Any],
    payload: bytes,
    *,
    header_codec: str | None = None,
    major: int = spec.MAJOR,
    minor: int = spec.MINOR,
    scheme_version: int = spec.SCHEME_VERSION,
    reserved: int = 0,
) -> bytes:
    """Container bytes; the header is zstd-compressed when that is smaller (or as forced)."""
    raw = dumps_header(header)
    if header_codec is None:
        packed = compress("zstd", raw)
        header_codec = "zstd" if len(packed) < len(raw) else "raw"
    stored = compress(header_codec, raw)
    codec_id = {v: k for k, v in spec.HEADER_CODECS.items()}[header_codec]
    fields = (spec.MAGIC, major, minor, scheme_version, codec_id, reserved)
    fields += (len(stored), len(raw), len(payload), zlib.crc32(payload))
    pre = spec.PREAMBLE.pack(*fields, 0)[: spec.HEADER_CRC_SPAN]
    crc = zlib.crc32(stored, zlib.crc32(pre))
    return pre + crc.to_bytes(4, "little") + stored + payload


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A container whose file-level rules hold; ``payload`` is a zero-copy view."""

    header: dict[str, Any]
    payload: memoryview
    minor: int
    header_codec: str
    header_stored_bytes: int


def parse(data: bytes | memoryview) -> Parsed:
    view = memoryview(data)
    if len(view) < len(spec.MAGIC) or bytes(view[: len(spec.MAGIC)]) != spec.MAGIC:
        raise E.BadMagic(
            "the file does not start with the pgolf artifact magic; is it an artifact "
            "written by `pgolf pack`?"
        )
    if len(view) < spec.PREAMBLE_SIZE:
        raise E.TruncatedFile(
            f"{len(view)} bytes is shorter than the {spec.PREAMBLE_SIZE}-byte preamble"
        )
    (_, major, minor, scheme_v, codec_id, reserved, h_stored, h_raw, p_len, p_crc, h_crc) = (
        spec.PREAMBLE.unpack_from(view)
    )
    _check_versions(major, minor, scheme_v)
    if reserved != 0:
        raise E.ReservedNotZero(f"reserved preamble byte is {reserved}, must be 0")
    if h_stored > spec.MAX_HEADER_BYTES or h_raw > spec.MAX_HEADER_BYTES:
        raise E.HeaderTooLarge(
            f"header of {max(h_stored, h_raw)} bytes exceeds the cap of {spec.MAX_HEADER_BYTES}"
        )
    expected = spec.PREAMBLE_SIZE + h_stored + p_len
    if len(view) < expected:
        raise E.TruncatedFile(
            f"file has {len(view)} bytes but its preamble declares {expected}; "
            "the copy was cut short, fetch it again"
        )
    if len(view) > expected:
        raise E.TrailingBytes(
            f"file has {len(view) - expected} bytes after the declared end ({expected} bytes)"
        )
    stored = view[spec.PREAMBLE_SIZE : spec.PREAMBLE_SIZE + h_stored]
    if zlib.crc32(stored, zlib.crc32(view[: spec.HEADER_CRC_SPAN])) != h_crc:
        raise E.HeaderChecksumMismatch("preamble/header crc32 does not match; the file is corrupt")
    if codec_id not in spec.HEADER_CODECS:
        raise E.UnknownCodec(f"header codec id {codec_id} is not one of {spec.HEADER_CODECS}")
    codec = spec.HEADER_CODECS[codec_id]
    header = _load_json(decompress(codec, stored, h_raw, "header"))
    payload = view[expected - p_len :]
    if zlib.crc32(payload) != p_crc:
        raise E.PayloadChecksumMismatch("payload crc32 does not match; the file is corrupt")
    return Parsed(header, payload, minor, codec, h_stored)


def _check_versions(major: int, minor: int, scheme_v: int) -> None:
    here = f"{spec.MAJOR}.{spec.MINOR}"
    if major < spec.MAJOR:
        raise E.VersionTooOld(
            f"artifact container v{major}.{minor} predates v{here}, which this pgolf reads; "
            "re-pack the checkpoint with this pgolf"
        )
    if major > spec.MAJOR:
        raise E.VersionTooNew(
            f"artifact container v{major}.{minor} is newer than v{here}, which this pgolf reads; "
            "upgrade pgolf"
        )
    if scheme_v < spec.SCHEME_VERSION:
        raise E.SchemeVersionTooOld(
            f"quantization scheme version {scheme_v} predates {spec.SCHEME_VERSION}; re-pack"
        )
    if scheme_v > spec.SCHEME_VERSION:
        raise E.SchemeVersionTooNew(
            f"quantization scheme version {scheme_v} is newer than {spec.SCHEME_VERSION}; "
            "upgrade pgolf"
        )


def _load_json(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as e:
        raise E.MalformedHeader(f"header is not UTF-8 JSON ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise E.MalformedHeader("header must be a JSON object")
    return header


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")
