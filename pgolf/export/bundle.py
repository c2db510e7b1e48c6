"""The exported ``train_gpt.py``: pgolf's own run-path modules, minified, in one script.

The challenge counts one file that trains, packs and evaluates. We generate it instead of
keeping a second copy: starting from ``pgolf.export.entry`` we follow every ``pgolf.*``
import (module level and inside functions), drop the modules the run path never executes,
merge the rest into one module (pgolf.export.merge: one namespace, exception messages and
unused definitions dropped), minify it (``python_minifier``: docstrings, comments, annotations, global and
local names) and ship

    from __future__ import annotations; C = the run's config (fields that differ from the
    defaults); the program; main(C, __file__)

compressed (lzma or brotli, whichever is smaller) behind a one-line ``exec`` stub, as records
do, but as raw bytes in a latin-1 string literal (the file says ``#coding:l1``), not base85. The script's size is what ``pgolf pack`` counts against the
budget, so it is measured by generating it: cached per config in the process, and the
minified program on disk (merging and minifying take seconds).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import lzma
import os
from pathlib import Path

import brotli
import python_minifier

import pgolf
from pgolf.config import RunConfig, from_json
from pgolf.export import checks, merge, shake, specialize
from pgolf.io import atomic_write_text

ENTRY = "pgolf.export.entry"
# Part of the cache key: another minifier version may minify differently.
MINIFIER = importlib.metadata.version("python-minifier")
# Reached through imports, never executed by the exported script: code-bytes measurement
# (the script reports its own size) and the exporter itself.
NEVER = frozenset({"pgolf.pack.codebytes", "pgolf.export.bundle"})
# Reached through function-level imports that only some configs execute.
OPTIONAL = {
    "pgolf.pack.gptq": lambda run: run.pack.gptq != "off",
    "pgolf.model.fa4": lambda run: run.model.attention_backend in ("auto", "fa4"),
    # "auto" imports it only for relu² (layers.resolve_mlp_kernel).
    "pgolf.model.quack_mlp": lambda run: (
        run.model.mlp_kernel == "quack"
        or (run.model.mlp_kernel == "auto" and run.model.mlp_activation == "relu2")
    ),
    "pgolf.eval.ttt_lora": lambda run: run.eval.uses_lora,
    "pgolf.eval.ttt_phased": lambda run: run.eval.uses_phased,
    "pgolf.eval.ngram": lambda run: run.eval.ngram_tilt,
    "pgolf.pack.lqer": lambda run: run.pack.lqer_rank > 0,
    "pgolf.pack.awq": lambda run: (
        run.pack.awq_extra_bits_frac > 0 or any(f > 0 for f in run.pack.search_awq)
    ),
}
# The decompressed program: the merged, minified modules, with the run's config as C (a name
# the program reads but never binds, so the minifier leaves it) and a last line that runs.
FOOTER = "{main}(C,__file__)"
# Exceptions whose text the exported script keeps: what bad data, paths or tokenizers raise
# at run time. Config checks lose theirs (the config was validated when exporting).
KEEP_MESSAGES = ("DataError",)
# Config fields the run replaces after export (besides the environment's, entry.ENV_OVERRIDES):
# the tokenizer decides vocab_size and bos_id, the script measures its own code_bytes and
# GPTQ builds an unfused copy of the model. Their checks stay in the script; the others,
# which the exported config passed, are dropped (pgolf.export.checks).
RUN_REPLACED = ("model.vocab_size", "model.bos_id", "model.fused_qkv", "pack.code_bytes")
# codec name -> (compress, the module that undoes it)
CODECS = {
    "lzma": (lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), "lzma"),
    "brotli": (lambda b: brotli.compress(b, quality=11, lgwin=24), "brotli"),
}
# The file is latin-1 (its first line says so), so each compressed byte is one byte of the
# file inside a string literal, but for the few that must be escaped there (1-2% more bytes,
# where base85 adds 25%). ``Script.text.encode()`` gives the file's bytes.
ENCODING = "l1"
STUB = '#coding:{enc}\nimport {mod};exec({mod}.decompress({lit}.encode("{enc}")))\n'


def latin1_literal(data: bytes) -> str:
    """A triple-quoted str literal whose latin-1 encoding is ``data``, as a latin-1 source.

    Escaped: the backslash, NUL (sources cannot hold one), CR (the reader turns it into LF)
    and only those quotes that would close the literal: every third of a run, and a run
    that ends the data (it would run into the closing quotes). LF stays as it is.
    """
    q = '"' if data.count(b'"') <= data.count(b"'") else "'"
    esc = {92: "\\\\", 13: "\\r", 0: "\\0"}
    out: list[str] = []
    run = 0  # unescaped quotes just written
    for i, b in enumerate(data):
        e = esc.get(b)
        if b == 0 and data[i + 1 : i + 2].isdigit():
            e = "\\x00"  # a digit after \0 would extend the escape
        if chr(b) == q:
            run += 1
            if run == 3 or not data[i + 1 :].strip(q.encode()):
                e, run = "\\" + q, 0
        else:
            run = 0
        out.append(e or chr(b))
    return f"{q * 3}{''.join(out)}{q * 3}"


class ScriptText(str):
    """The script's text, which ``encode()`` turns into its bytes: latin-1, as it declares."""

    def encode(self, encoding: str = "latin-1", errors: str = "strict") -> bytes:
        return str.encode(self, encoding, errors)


@dataclasses.dataclass(frozen=True)
class Script:
    text: ScriptText  # the train_gpt.py file (latin-1: ``text.encode()`` is its bytes)
    modules: tuple[str, ...]  # pgolf modules it carries
    source_bytes: int  # those modules as they are
    minified_bytes: int  # the decompressed program (config + merged, minified modules)
    compressed_bytes: int  # the program, compressed
    codec: str  # lzma or brotli: the smaller

    @property
    def shipped_bytes(self) -> int:
        """The file's size: what the challenge counts as code."""
        return len(self.text.encode())


def package_root() -> Path:
    return Path(pgolf.__file__).parent


def module_path(name: str, root: Path | None = None) -> Path | None:
    base = (root or package_root()).parent / name.replace(".", "/")
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _import_names(name: str, root: Path | None = None) -> set[str]:
    """Every absolute module ``name`` imports, at module level or inside functions."""
    path = module_path(name, root)
    assert path is not None, name
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from pgolf.pack import gptq`` imports a module, not a name
            found.update(
                f"{node.module}.{a.name}"
                for a in node.names
                if node.module.startswith("pgolf") and module_path(f"{node.module}.{a.name}", root)
            )
    return found


def imported_modules(name: str, root: Path | None = None) -> set[str]:
    """``pgolf.*`` modules that ``name`` imports, their parent packages included."""
    mods = {m for m in _import_names(name, root) if m == "pgolf" or m.startswith("pgolf.")}
    return {".".join(m.split(".")[: i + 1]) for m in mods for i in range(m.count(".") + 1)}


def third_party_imports(name: str, root: Path | None = None) -> set[str]:
    """Top-level names of the other packages ``name`` imports (stdlib included)."""
    return {m.split(".")[0] for m in _import_names(name, root)} - {"pgolf"}


def run_modules(run: RunConfig, root: Path | None = None) -> list[str]:
    """The modules the exported script needs for ``run``: the entry's import closure."""
    skip = set(NEVER) | {m for m, needed in OPTIONAL.items() if not needed(run)}
    seen: set[str] = set()
    todo = [ENTRY, *(ENTRY.rsplit(".", i)[0] for i in range(1, ENTRY.count(".") + 1))]
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        todo.extend(imported_modules(name, root))
    return sorted(seen)


def merged_program(names: list[str], root: Path, run: RunConfig) -> str:
    """The carried modules as one minified module ending in ``main(C,__file__)``.

    pgolf.export.merge puts them in one namespace and drops the definitions nothing uses,
    pgolf.export.specialize the branches ``run``'s fixed fields rule out; python_minifier
    then renames globals and locals across the whole program (class-level names, so
    dataclass fields and config keys, stay). Cached on disk by the sources, the names of
    pgolf's modules, the fixed config values, this exporter's code and the minifier version:
    merging and minifying take seconds.
    """
    raw = {n: module_path(n, root).read_text() for n in names}
    every = sorted(
        ".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in root.rglob("*.py")
    )
    tools = [Path(m.__file__).read_text() for m in (merge, shake, checks, specialize)]
    tools += [Path(__file__).read_text(), module_path(ENTRY, root).read_text()]
    spec = config_spec(run, root)
    key = hashlib.sha256(
        json.dumps([MINIFIER, tools, raw, every, dataclasses.asdict(spec)], sort_keys=True).encode()
    ).hexdigest()
    cached = cache_dir() / f"{key}.py"
    if cached.is_file():
        return cached.read_text()
    text = _minify(shaken_program(names, root, run, raw))
    if "C" in merge.module_bindings(text):
        raise merge.MergeError("the minified program binds C, the name of the embedded config")
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cached, text)
    except OSError:  # a read-only cache only costs time
        pass
    return text


def shaken_program(
    names: list[str], root: Path, run: RunConfig, raw: dict[str, str] | None = None
) -> str:
    """The carried modules merged, their messages, checks and dead branches dropped, shaken.

    This is the program unminified, specialized to ``run``'s fixed config fields.
    """
    raw = raw or {n: module_path(n, root).read_text() for n in names}
    packages = {n for n in names if module_path(n, root).name == "__init__.py"}
    source = merge.merge(
        raw,
        packages,
        lambda name: FOOTER.format(main=name(ENTRY, "main")),
        lambda n: module_path(n, root) is not None,
        ENTRY,
    )
    source = merge.drop_messages(source, keep=KEEP_MESSAGES)
    source = checks.strip_checks(source, config_sections(root))
    return shake.shake(specialize.specialize(source, config_spec(run, root)))


def changeable_fields(root: Path | None = None) -> set[str]:
    """``section.field`` names that may differ in the script from the exported config."""
    tree = ast.parse(module_path(ENTRY, root).read_text())
    env = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "ENV_OVERRIDES"
    )
    return set(env.values()) | set(RUN_REPLACED)


def config_sections(root: Path | None = None) -> dict[str, tuple[set[str], set[str]]]:
    """Config section class name -> (its fields, those that may change after export)."""
    from pgolf.config import SECTIONS

    changeable = changeable_fields(root)
    out = {}
    for section, (cls, _) in SECTIONS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        out[cls.__name__] = (fields, {f for f in fields if f"{section}.{f}" in changeable})
    return out


def config_spec(run: RunConfig, root: Path | None = None) -> specialize.Spec:
    """The values of ``run``'s fields that cannot change in the script (the others left out)."""
    from pgolf.config import SECTIONS

    classes = {section: cls for section, (cls, _) in SECTIONS.items()}
    # the config as the script rebuilds it from C: a default it omits keeps its own type
    # (embed_bits 8, where the full JSON gives 8.0)
    return specialize.spec_for(from_json(config_delta(run)), classes, changeable_fields(root))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pgolf" / "minified"


def _minify(source: str) -> str:
    # hoist_literals off: the compressor already shares repeated strings, and the hoisted
    # names cost more than they save (40,759 vs 41,310 B brotli'd, default config).
    return python_minifier.minify(
        source,
        remove_literal_statements=True,
        rename_globals=True,
        rename_locals=True,
        hoist_literals=False,
        remove_asserts=False,
        remove_debug=False,
    )


def config_delta(run: RunConfig) -> dict:
    """The fields of ``run`` that differ from the defaults; ``from_json`` restores the rest."""
    full, base = run.to_dict(), RunConfig().to_dict()
    delta: dict = {"preset": run.preset}
    for section, values in full.items():
        if section == "preset":
            continue
        changed = {k: v for k, v in values.items() if base[section][k] != v}
        if changed:
            delta[section] = changed
    assert from_json(delta) == run, "config delta does not rebuild the config"
    return delta


def build_script(run: RunConfig, root: Path | None = None) -> Script:
    return _build(run.to_json(), str(root or package_root()))


@functools.lru_cache(maxsize=8)
def _build(run_json: str, root_dir: str) -> Script:
    root = Path(root_dir)
    run = from_json(run_json)
    names = run_modules(run, root)
    first, rest = merged_program(names, root, run).split("\n", 1)
    assert first == merge.FUTURE, first
    config = json.dumps(config_delta(run), separators=(",", ":"))
    program = f"{first}\nC={config!r}\n{rest}"
    packed = {name: fn(program.encode()) for name, (fn, _) in CODECS.items()}
    codec = min(packed, key=lambda name: len(packed[name]))
    return Script(
        text=ScriptText(
            STUB.format(enc=ENCODING, mod=CODECS[codec][1], lit=latin1_literal(packed[codec]))
        ),
        modules=tuple(names),
        source_bytes=sum(len(module_path(n, root).read_bytes()) for n in names),
        minified_bytes=len(program.encode()),
        compressed_bytes=len(packed[codec]),
        codec=codec,
    )
