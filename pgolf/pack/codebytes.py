"""Counted code bytes: the size of the ``train_gpt.py`` that ``pgolf export`` writes.

The challenge counts the one script that trains, packs and evaluates, so the packer's
budget holds exactly that file: pgolf.export.bundle generates it in memory for the config
(cached per config) and we take its length; ``pack.code_bytes >= 0`` overrides it
(pgolf.pack.api.code_bytes_for).
"""

from __future__ import annotations

import os
import subprocess
import sys

from pgolf.config import RunConfig

# Run by prewarm() in a child process: build the script, which fills the disk cache.
_PREWARM = (
    "import sys; from pgolf.config import from_json; from pgolf.export.bundle import build_script;"
    " build_script(from_json(sys.stdin.read()))"
)


def measure(run: RunConfig):
    """The exported script for ``run`` (a pgolf.export.bundle.Script: text and sizes)."""
    from pgolf.export.bundle import build_script

    return build_script(run)


def prewarm(run: RunConfig) -> subprocess.Popen | None:
    """Start building ``run``'s script in a background process, so that a pack stage minutes
    later finds the minified program in the disk cache instead of spending its first seconds
    minifying (8.0 s of the record's 37.8 s pack on the H200 machine, a cold cache).

    One thread at low priority: it shares the machine with the data and training stages.
    None when the counted code is given (``pack.code_bytes >= 0``): nothing to build."""
    if run.pack.code_bytes >= 0:
        return None
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PGOLF_CPU_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _PREWARM],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
        preexec_fn=lambda: os.nice(10),
    )
    proc.stdin.write(run.to_json())
    proc.stdin.close()
    return proc
