"""Reading documents from .txt, .jsonl and .jsonl.{zst,xz,gz} files, lazily and in input order.

Two layers, so the build can parallelise the expensive part:

* ``iter_records`` yields *raw* records cheaply in the main process: for JSON lines the
  undecoded line bytes (decompression is fast, JSON parsing is not), for text files the
  documents themselves.
* ``parse_record`` turns one raw record into the document text; build workers call it, so
  JSON parsing runs on every core.

``iter_documents`` composes the two for callers that just want strings (tokenizer
training, tests, the demo corpus).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pgolf.errors import DataError

SUFFIXES = (".txt", ".jsonl", ".jsonl.zst", ".jsonl.xz", ".jsonl.gz")
# A blank line (possibly holding spaces or tabs) separates documents in .txt inputs.
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")


@dataclass(frozen=True)
class Record:
    """One document before parsing: ``raw`` is line bytes (JSON kinds) or the text (txt)."""

    path: str
    line: int  # 1-based line number of the record's start in its file
    raw: bytes | str


def input_kind(path: str | Path) -> str:
    """'txt', 'jsonl' or 'jsonl.zst' from the file name, or a DataError naming the choices."""
    name = str(path).lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix[1:]
    raise DataError(
        f"{path}: unknown input type; expected a file ending in {', '.join(SUFFIXES)} "
        "(.txt: documents separated by blank lines; .jsonl[.zst|.xz|.gz]: one JSON object per line)"
    )


def check_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Fail before any work when an input is missing, unreadable or of an unknown type."""
    out = []
    for p in paths:
        path = Path(p)
        input_kind(path)
        if not path.is_file():
            raise DataError(f"{path}: input file not found")
        out.append(path)
    if not out:
        raise DataError("no input files given (pass --input FILE, or --demo for the demo corpus)")
    return out


class _CountingReader(io.RawIOBase):
    """Wraps a file and counts bytes read from disk, so progress bars can show real ETAs."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[override]
        n = self._f.readinto(buf)
        self.consumed += n or 0
        return n


_CODEC_NAMES = {"jsonl.zst": "zstd", "jsonl.xz": "xz", "jsonl.gz": "gzip"}


def _decompressor(kind: str, raw: _CountingReader) -> tuple[BinaryIO, tuple[type[Exception], ...]]:
    """A line-iterable decompressing reader over ``raw`` and the errors its codec raises."""
    if kind == "jsonl.zst":
        import zstandard

        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20)
        return io.BufferedReader(stream, buffer_size=1 << 20), (zstandard.ZstdError,)
    if kind == "jsonl.xz":
        import lzma

        return lzma.LZMAFile(raw), (lzma.LZMAError, EOFError)
    import gzip

    return gzip.GzipFile(fileobj=raw), (OSError, EOFError)  # BadGzipFile is an OSError


def _open_lines(path: Path, counter: _CountingReader) -> Iterator[bytes]:
    kind = input_kind(path)
    if kind == "jsonl":
        yield from io.BufferedReader(counter, buffer_size=1 << 20)
        return
    reader, errors = _decompressor(kind, counter)
    try:
        with reader:
            yield from reader
    except errors as e:
        raise DataError(
            f"{path}: not a valid {_CODEC_NAMES[kind]} file ({e}); expected {kind}"
        ) from None


def iter_records(
    paths: Iterable[str | Path], progress: list[int] | None = None
) -> Iterator[Record]:
    """Raw records of every input in order; ``progress[0]`` grows by on-disk bytes read."""
    for path in check_inputs(paths):
        with path.open("rb") as f:
            counter = _CountingReader(f)
            last = 0
            if input_kind(path) == "txt":
                yield from _txt_records(path, f.read())
                counter.consumed = path.stat().st_size
            else:
                for lineno, line in enumerate(_open_lines(path, counter), start=1):
                    if progress is not None and counter.consumed != last:
                        progress[0] += counter.consumed - last
                        last = counter.consumed
                    if line.strip():
                        yield Record(str(path), lineno, line)
            if progress is not None:
                progress[0] += counter.consumed - last


def _txt_records(path: Path, data: bytes) -> Iterator[Record]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not valid UTF-8 at byte {e.start} (expected UTF-8 text)"
        ) from None
    text = text.replace("\r\n", "\n")
    line = 1
    pos = 0
    for m in _BLANK_LINE.finditer(text + "\n\n"):
        block = text[pos : m.start()]
        if block.strip():
            lead = len(block) - len(block.lstrip("\n"))
            yield Record(str(path), line + lead, block.strip())
        line += text.count("\n", pos, m.end())
        pos = m.end()


def parse_record(record: Record, text_field: str = "text") -> str:
    """The document text of a raw record; DataError with file:line for bad JSON lines."""
    if isinstance(record.raw, str):
        return record.raw
    where = f"{record.path}:{record.line}"
    try:
        obj = json.loads(record.raw)
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: line is not valid UTF-8 ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{where}: bad JSON ({e.msg} at column {e.colno}); expected one JSON object per line"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object with a {text_field!r} field")
    text = obj.get(text_field)
    if not isinstance(text, str):
        what = "missing" if text is None else f"a {type(text).__name__}, not a string"
        raise DataError(
            f"{where}: field {text_field!r} is {what}; expected every line to carry the "
            f"document text in {text_field!r} (set --set data.text_field=NAME for another field)"
        )
    return text


def iter_documents(paths: Iterable[str | Path], text_field: str = "text") -> Iterator[str]:
    """Document texts of every input, in order (parsed in this process)."""
    for record in iter_records(paths):
        yield parse_record(record, text_field)
