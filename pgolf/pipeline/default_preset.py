"""The preset ``pgolf run`` trains when ``--preset`` is not given.

Without a GPU the full recipes would run for days, so the default is the ``tiny`` demo. With
one, it is ``record`` (SP8192): it beat ``default`` on bench-300 by 0.023 val_bpb after TTT
(1.1503 vs 1.1736, H200, docs/BENCHMARKS.md). ``record`` is built for an 8,192-piece
vocabulary; when the tokenizer given (or the one in ``--data``) has another size, ``default``
is the recipe measured for it.
"""

from __future__ import annotations

from pathlib import Path

from pgolf.config import resolve
from pgolf.data.build import TOKENIZER_NAME
from pgolf.data.tokenizer import tokenizer_identity


def default_preset(
    cuda: bool, tokenizer: Path | None = None, data_dir: Path | None = None
) -> tuple[str, str]:
    """(preset, reason) for a run without ``--preset``; the reason is one log token."""
    if not cuda:
        return "tiny", "no_gpu"
    if tokenizer is None and data_dir is not None and (data_dir / TOKENIZER_NAME).is_file():
        tokenizer = data_dir / TOKENIZER_NAME
    want = resolve("record").model.vocab_size
    if tokenizer is None:
        return "record", f"gpu,tokenizer_trained_with_vocab_{want}"
    vocab = tokenizer_identity(tokenizer)["vocab_size"]
    if vocab != want:
        return "default", f"gpu,tokenizer_vocab_{vocab}_not_record's_{want}"
    return "record", f"gpu,tokenizer_vocab_{vocab}"
