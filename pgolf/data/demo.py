"""The embedded demo corpus: real English text that every Python installation carries.

Sources, in this order:

1. ``pydoc_data.topics.topics``: the language reference topics behind ``help("if")``,
   one document per topic, sorted by name.
2. The standard library's own docstrings, one document per module (its module docstring,
   then the docstrings of its classes and functions in source order), modules sorted by
   path. Sources are read with ``ast``, never imported: importing all of the standard
   library has side effects (``antigravity`` opens a browser, ``this`` prints).

Nothing depends on the file system's listing order or on hash seeds, so the same Python
gives the same corpus byte for byte. It comes to about 2 MB, enough to train a small
tokenizer and a tiny model in seconds on a laptop with no network.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pgolf.io import atomic_write_text

DEMO_NAME = "demo.jsonl"
# Packages that hold tests, generated tables or demos rather than documentation prose.
_SKIP_DIRS = {
    "site-packages",
    "dist-packages",
    "test",
    "tests",
    "idle_test",
    "__pycache__",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "encodings",
}
# Docstrings shorter than this are mostly one-line summaries ("Return self."), not prose.
_MIN_DOCSTRING_CHARS = 120
_MIN_DOC_CHARS = 400
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_BLANKS = re.compile(r"\n{3,}")


def _clean(text: str) -> str:
    text = _TRAILING_SPACE.sub("\n", text.replace("\r\n", "\n").expandtabs(4))
    return _MANY_BLANKS.sub("\n\n", text).strip()


def topic_documents() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = _clean(topics[name])
        if len(text) >= _MIN_DOC_CHARS:
            yield f"pydoc_data.topics:{name}", text


def _module_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


def _docstrings(tree: ast.Module) -> Iterator[str]:
    module_doc = ast.get_docstring(tree)
    if module_doc:
        yield module_doc
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= _MIN_DOCSTRING_CHARS:
                yield doc


def docstring_documents(root: Path | None = None) -> Iterator[tuple[str, str]]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    for path in _module_files(root):
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError, OSError):
            continue  # e.g. deliberately broken files shipped for tests
        text = _clean("\n\n".join(_docstrings(tree)))
        if len(text) >= _MIN_DOC_CHARS:
            yield f"stdlib:{path.relative_to(root).as_posix()}", text


def demo_documents() -> list[dict[str, Any]]:
    """Every demo document as ``{"text", "source"}``, in the fixed corpus order."""
    docs = [{"text": t, "source": s} for s, t in topic_documents()]
    docs += [{"text": t, "source": s} for s, t in docstring_documents()]
    return docs


def write_demo_corpus(out_dir: str | Path) -> Path:
    """Write ``demo.jsonl`` into ``out_dir`` (atomically) and return its path."""
    lines = [json.dumps(d, ensure_ascii=False, sort_keys=True) for d in demo_documents()]
    path = Path(out_dir) / DEMO_NAME
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def describe() -> str:
    return f"Python {sys.version.split()[0]} documentation topics and standard-library docstrings"
