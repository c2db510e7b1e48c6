"""Named reader errors, one class per validation rule of formats/artifact-v1.md.

The rule number (``rule``) matches the spec's numbered list, so an error message, the
spec and the hand-crafted broken file in the tests all point at the same rule. R27, R30
and R31 need knowledge the container does not have (the tokenizer file, the model); the
loaders that have it raise them, but they live here so every rejection of an artifact
is one ``FormatError``.
"""

from __future__ import annotations

from pgolf.errors import PgolfError


class FormatError(PgolfError, ValueError):
    """Base: the file is not a valid pgolf artifact v1."""

    rule = 0

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid artifact (rule R{self.rule}): {message}")


class BadMagic(FormatError):
    rule = 1


class VersionTooOld(FormatError):
    rule = 2


class VersionTooNew(FormatError):
    rule = 3


class SchemeVersionTooOld(FormatError):
    rule = 4


class SchemeVersionTooNew(FormatError):
    rule = 5


class ReservedNotZero(FormatError):
    rule = 6


class HeaderTooLarge(FormatError):
    rule = 7


class TruncatedFile(FormatError):
    rule = 8


class TrailingBytes(FormatError):
    rule = 9


class HeaderChecksumMismatch(FormatError):
    rule = 10


class UnknownCodec(FormatError):
    rule = 11


class DecompressedSizeExceeded(FormatError):
    rule = 12


class CorruptStream(FormatError):
    rule = 13


class MalformedHeader(FormatError):
    rule = 14


class InvalidName(FormatError):
    rule = 16


class DuplicateName(FormatError):
    rule = 17


class UnknownDtype(FormatError):
    rule = 18


class UnknownScheme(FormatError):
    rule = 19


class UnknownFilter(FormatError):
    rule = 20


class SizeCapExceeded(FormatError):
    rule = 21


class SegmentLayoutError(FormatError):
    rule = 22


class StreamLayoutError(FormatError):
    rule = 23


class ShapeLengthMismatch(FormatError):
    rule = 24


class PayloadChecksumMismatch(FormatError):
    rule = 15


class SymbolOutOfRange(FormatError):
    rule = 25


class NonFiniteScale(FormatError):
    rule = 26


class TokenizerMismatch(FormatError):
    """Not a file rule: the artifact was packed for a different tokenizer (checked on load)."""

    rule = 27


class DecodeBudgetExceeded(FormatError):
    """Spec 1.1: the segments declare more raw bytes than the file's size allows."""

    rule = 28


class RansLaneTooLong(FormatError):
    """Spec 1.1: an rANS lane holds more symbols than one decode may step through."""

    rule = 29


class ModelConfigInvalid(FormatError):
    """Not a file rule: the header's model section is no valid, bounded model config."""

    rule = 30


class TensorShapeMismatch(FormatError):
    """Not a file rule: the tensors are not exactly those the model config implies."""

    rule = 31


RULES: tuple[type[FormatError], ...] = (
    BadMagic,
    VersionTooOld,
    VersionTooNew,
    SchemeVersionTooOld,
    SchemeVersionTooNew,
    ReservedNotZero,
    HeaderTooLarge,
    TruncatedFile,
    TrailingBytes,
    HeaderChecksumMismatch,
    UnknownCodec,
    DecompressedSizeExceeded,
    CorruptStream,
    MalformedHeader,
    PayloadChecksumMismatch,
    InvalidName,
    DuplicateName,
    UnknownDtype,
    UnknownScheme,
    UnknownFilter,
    SizeCapExceeded,
    SegmentLayoutError,
    StreamLayoutError,
    ShapeLengthMismatch,
    SymbolOutOfRange,
    NonFiniteScale,
    TokenizerMismatch,
    DecodeBudgetExceeded,
    RansLaneTooLong,
    ModelConfigInvalid,
    TensorShapeMismatch,
)
