"""Counted code bytes: the size of the ``train_gpt.py`` that ``pgolf export`` writes.

The challenge counts the one script that trains, packs and evaluates, so the packer's
budget holds exactly that file: pgolf.export.bundle generates it in memory for the config
(cached per config) and we take its length; ``pack.code_bytes >= 0`` overrides it
(pgolf.pack.api.code_bytes_for).
"""

from __future__ import annotations

from pgolf.config import RunConfig


def measure(run: RunConfig):
    """The exported script for ``run`` (a pgolf.export.bundle.Script: text and sizes)."""
    from pgolf.export.bundle import build_script

    return build_script(run)
