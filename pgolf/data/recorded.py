"""The tokenizer a data folder was encoded with, as its own records say, against a given one.

Shards are bare token ids: the same ids decode to other text under another tokenizer of
the same (or a larger) vocabulary, so training or scoring them with the wrong ``.model``
runs to the end and reports a wrong val_bpb. Before any work, ``pgolf-train`` and
``pgolf-eval`` therefore compare ``--tokenizer`` with the sha256 the folder records:
``manifest.json`` of ``pgolf data build``, else ``fetch.json`` of ``pgolf data fetch``,
else the sha256 of a ``tokenizer.model`` lying in the folder. A folder with none of these
(shards made by another tool) can only be checked for token ids below the vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

from pgolf.data.build import MANIFEST_FORMAT, MANIFEST_NAME, TOKENIZER_NAME
from pgolf.data.fetch import FETCH_RECORD
from pgolf.data.tokenizer import sha256_file
from pgolf.errors import DataError


def _recorded_in(path: Path, want_format: str | None) -> str | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e}); rebuild or re-fetch the data folder") from None
    if not isinstance(record, dict):
        return None
    if want_format is not None and record.get("format") != want_format:
        return None  # another tool's file of the same name: it says nothing about ours
    tok = record.get("tokenizer")
    sha = tok.get("sha256") if isinstance(tok, dict) else None
    return sha if isinstance(sha, str) and sha else None


def recorded_tokenizer(data_dir: str | Path) -> tuple[str, str] | None:
    """(sha256, where it was read) of the tokenizer the folder was made with, if recorded."""
    data_dir = Path(data_dir)
    for name, fmt in ((MANIFEST_NAME, MANIFEST_FORMAT), (FETCH_RECORD, None)):
        sha = _recorded_in(data_dir / name, fmt)
        if sha:
            return sha, name
    local = data_dir / TOKENIZER_NAME
    if local.is_file():
        return sha256_file(local), TOKENIZER_NAME
    return None


def check_tokenizer_for_data(data_dir: str | Path, tokenizer: str | Path) -> None:
    """DataError unless ``tokenizer`` is the one the data folder records."""
    recorded = recorded_tokenizer(data_dir)
    if recorded is None:
        return
    want, source = recorded
    if not Path(tokenizer).is_file():
        raise DataError(f"{tokenizer}: tokenizer model not found (pass --tokenizer PATH/TO/.model)")
    got = sha256_file(tokenizer)
    if got != want:
        raise DataError(
            f"{tokenizer}: sha256 {got[:12]}… is not the tokenizer {data_dir} was encoded with "
            f"({want[:12]}… per its {source}); pass that tokenizer, e.g. "
            f"--tokenizer {Path(data_dir) / TOKENIZER_NAME}"
        )
