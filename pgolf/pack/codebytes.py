"""Counted code bytes: what the eval side needs to run an artifact, shipped compactly.

Competitors count the script that loads and scores the artifact. For pgolf that is the
format reader, the model, the evaluator, the bits of pgolf/data eval uses, and the config
sections. We strip docstrings and comments (``ast.unparse``), concatenate the modules and
ship them the way competitors do: lzma-compressed, base85-encoded, behind a one-line
``exec`` stub. The stub's size is what the packer adds to the budget.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import lzma
from pathlib import Path

import pgolf

# The single list of eval-side code (globs relative to the pgolf package). Update it when
# the evaluator's imports change; tests/test_pack_codebytes.py checks that each entry exists.
EVAL_SIDE = (
    "__init__.py",
    "errors.py",
    "format/*.py",
    "model/**/*.py",
    "eval/**/*.py",
    "data/__init__.py",
    "data/shards.py",
    "data/bpb.py",
    "data/tokenizer.py",
    "config/*.py",
)
# The packer-only parts of pgolf/format are not needed to *read* an artifact.
EXCLUDE = ("format/writer.py",)
STUB = 'import lzma,base64;exec(lzma.decompress(base64.b85decode("{}")))'


@dataclasses.dataclass(frozen=True)
class CodeBytes:
    files: tuple[str, ...]
    source_bytes: int  # the files as they are
    minified_bytes: int  # docstrings and comments stripped
    lzma_bytes: int  # minified, lzma-compressed
    shipped_bytes: int  # the self-extracting stub: the number counted against the budget


def eval_side_files(root: Path | None = None) -> list[Path]:
    root = root or Path(pgolf.__file__).parent
    found: set[Path] = set()
    for pattern in EVAL_SIDE:
        found.update(p for p in root.glob(pattern) if p.is_file())
    excluded = {root / e for e in EXCLUDE}
    return sorted(p for p in found - excluded if "__pycache__" not in p.parts)


def minify(source: str) -> str:
    """Source without docstrings and comments; semantics unchanged (``ast`` round trip)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _is_docstring(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def measure(root: Path | None = None) -> CodeBytes:
    root = root or Path(pgolf.__file__).parent
    files = eval_side_files(root)
    sources = [p.read_text() for p in files]
    mini = "\n".join(
        f"# {p.relative_to(root)}\n{minify(s)}" for p, s in zip(files, sources, strict=True)
    )
    packed = lzma.compress(mini.encode(), preset=9 | lzma.PRESET_EXTREME)
    stub = STUB.format(base64.b85encode(packed).decode())
    return CodeBytes(
        files=tuple(str(p.relative_to(root)) for p in files),
        source_bytes=sum(len(s.encode()) for s in sources),
        minified_bytes=len(mini.encode()),
        lzma_bytes=len(packed),
        shipped_bytes=len(stub.encode()),
    )
