"""Tree shaking of the exported program (pgolf.export.shake): what it drops and what it keeps."""

from __future__ import annotations

import ast
import builtins
import symtable
import sys
import types
from functools import cache

import pytest

from pgolf.config import resolve
from pgolf.export import bundle, shake


def _run(src: str) -> dict:
    space: dict = {}
    exec(compile(src, "t", "exec"), space)
    return space


def _defs(src: str) -> set[str]:
    """Module-level names, ``Class.method`` and ``loader/name`` defined in ``src``."""
    out: set[str] = set()
    for n in ast.parse(src).body:
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            out.add(n.name)
            sep = "." if isinstance(n, ast.ClassDef) else "/"
            out |= {f"{n.name}{sep}{m.name}" for m in n.body if hasattr(m, "name")}
            out |= {
                f"{n.name}{sep}{m.targets[0].id}"
                for m in n.body
                if isinstance(m, ast.Assign) and isinstance(m.targets[0], ast.Name)
            }
        elif isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name):
            out.add(n.targets[0].id)
    return out


def test_a_local_of_the_same_spelling_does_not_keep_a_global():
    src = (
        "def train():\n    return 1\n"
        "def plot(h):\n    train = [x for x in h]\n    return train\n"
        "print(plot([1]))\n"
    )
    out = shake.shake(src)
    assert "def train" not in out and "def plot" in out


def test_methods_are_kept_by_attribute_or_string_and_dropped_otherwise():
    src = (
        "import torch\n"
        "class A:\n"
        "    def __init__(self):\n        self.x = 1\n"
        "    def used(self):\n        return self.x\n"
        "    def by_name(self):\n        return 2\n"
        "    def unused(self):\n        return 3\n"
        "    @property\n    def prop(self):\n        return 4\n"
        "    @prop.setter\n    def prop(self, v):\n        pass\n"
        "    def write(self, s):\n        pass\n"  # a file protocol name: a library may call it
        "class M(torch.nn.Module):\n"
        "    def forward(self, x):\n        return x\n"  # torch calls it
        "    def extra_repr(self):\n        return 'm'\n"
        "    def helper(self):\n        return 0\n"
        "a = A()\nprint(a.used(), getattr(a, 'by_name')(), M()(1))\n"
    )
    out = shake.shake(src)
    defs = _defs(out)
    assert {"A.used", "A.by_name", "A.write", "M.forward", "M.extra_repr"} <= defs
    assert not {"A.unused", "A.prop", "M.helper"} & defs
    _run(out)


def test_attribute_names_built_at_run_time_keep_every_method():
    src = (
        "class A:\n    def f_one(self):\n        return 1\n    def f_two(self):\n        return 2\n"
        "k = 'one'\nprint(getattr(A(), f'f_{k}')())\n"
    )
    assert {"A.f_one", "A.f_two"} <= _defs(shake.shake(src))


def test_a_class_with_an_unknown_base_keeps_its_methods():
    src = (
        "from nowhere_such_module import Base\n"
        "class A(Base):\n    def hook(self):\n        return 1\n"
        "print(A)\n"
    )
    assert "A.hook" in _defs(shake.shake(src))


def test_a_loader_keeps_only_the_globals_it_binds_that_are_used():
    src = (
        "def load_m():\n"
        "    global f, g, K, load_m\n"
        "    K: int = 3\n"
        "    def f():\n        return K\n"
        "    def g():\n        return 2\n"
        "    load_m = int\n"
        "def use():\n    load_m()\n    return f()\n"
        "print(use())\n"
    )
    out = shake.shake(src)
    assert {"load_m/f", "load_m/K"} <= _defs(out) and "load_m/g" not in _defs(out)
    _run(out)


def test_code_after_return_or_raise_goes():
    src = (
        "def dead():\n    return 1\n"
        "def f(x):\n"
        "    if x:\n        raise KeyError('no')\n        dead()\n"
        "    for i in range(3):\n        continue\n        dead()\n"
        "    return 2\n    dead()\n"
        "print(f(0))\n"
    )
    out = shake.shake(src)
    assert "dead" not in out and "raise KeyError('no')" in out
    assert _run(out) is not None


def test_statements_with_effects_stay():
    src = (
        "import functools\nREG = {}\n"
        "def register(f):\n    REG[f.__name__] = f\n    return f\n"
        "@register\ndef hooked():\n    return 1\n"
        "@functools.cache\ndef unused():\n    return 2\n"
        "X = open('/dev/null')\n"
    )
    out = shake.shake(src)
    assert "def hooked" in out and "X = open" in out and "def unused" not in out


@cache
def _program(preset: str, *overrides: str) -> str:
    run = resolve(preset, list(overrides))
    return bundle.shaken_program(bundle.run_modules(run), bundle.package_root(), run)


def test_default_program_drops_what_the_script_never_runs():
    defs = _defs(_program("default"))
    # resuming a run, the test helpers of GPTQ and of the n-gram tilt (off by default)
    assert "Trainer.resume" not in defs and "train" not in defs
    assert "load_pgolf_pack_gptq/gptq_quantize" not in defs and "make_logits_fn" not in defs
    # the presets (the config is embedded resolved) and what only reading them needed
    assert "preset" not in defs and "PRESET_NAMES" not in defs
    assert not any(d.startswith("PRESETS") for d in defs)
    # what it runs stays
    assert {"Trainer.run", "Trainer.warmup", "Trainer.finish", "pack_checkpoint"} <= defs
    assert "load_pgolf_pack_gptq/gptq_quantize_many" in defs or any(
        d.startswith("load_pgolf_pack_gptq/") for d in defs
    )


def test_a_config_that_switches_the_ngram_tilt_on_keeps_it():
    defs = _defs(_program("default", "eval.ngram_tilt=true"))
    assert "make_logits_fn" in defs and any(d.startswith("load_pgolf_eval_ngram/") for d in defs)


@pytest.mark.parametrize("preset", ["default", "record", "tiny"])
def test_every_global_the_minified_program_reads_is_bound(preset):
    # a definition dropped while still used would be a NameError at run time
    run = resolve(preset)
    text = bundle.merged_program(bundle.run_modules(run), bundle.package_root(), run)
    top = symtable.symtable(text, "program", "exec")
    bound = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    bound |= {s.get_name() for s in top.get_symbols() if s.is_namespace()}
    tables = [top]
    reads: set[str] = set()
    while tables:
        t = tables.pop()
        tables += t.get_children()
        for s in t.get_symbols():
            if s.is_referenced() and (t is top or s.is_global()):
                reads.add(s.get_name())
            if s.is_declared_global() and (s.is_assigned() or s.is_imported()):
                bound.add(s.get_name())
    # ``awq.f()`` after the ``raise ModuleNotFoundError`` that replaced ``from pgolf.pack
    # import awq`` (a module the config does not use) is never reached
    not_carried = {m.rpartition(".")[2] for m in bundle.OPTIONAL}
    missing = reads - bound - set(dir(builtins)) - {"C", "__file__"} - not_carried
    assert not missing, sorted(missing)


def test_unused_pure_constants_and_their_registry_stores_go():
    src = (
        "import re\nfrom typing import TypeVar\n"
        "T = TypeVar('T')\nPAT = re.compile('a+')\nUSED = re.compile('b')\n"
        "P = {'tiny': {'x': 1}}\nP['big'] = dict(P['tiny'])\n"
        "NAMES = sorted(P)\n"
        "print(USED.match('b'))\n"
    )
    out = shake.shake(src)
    assert "USED = re.compile" in out
    for gone in ("TypeVar(", "PAT", "P = ", "P['big']", "NAMES"):
        assert gone not in out
    _run(out)


def test_a_registry_part_nothing_reads_becomes_none():
    src = (
        "class A:\n    pass\nclass B:\n    pass\n"
        "PA = {'t': 1}\nPB = {'t': 2}\n"
        "REG = {'a': (A, PA), 'b': (B, PB)}\n"
        "def build(name):\n"
        "    if name not in REG:\n        raise KeyError(name)\n"
        "    return {k: cls() for k, (cls, _) in REG.items()}[name]\n"
        "print(build('a'), sorted(REG))\n"
    )
    out = shake.shake(src)
    assert "REG = {'a': (A, None), 'b': (B, None)}" in out and "PA" not in out
    _run(out)
    # a use that may read the second part keeps it
    kept = shake.shake(src + "for k, (cls, presets) in REG.items():\n    print(presets)\n")
    assert "(A, PA)" in kept and "PA = {" in kept
    kept = shake.shake(src + "print(REG['a'])\n")
    assert "(A, PA)" in kept


def test_a_class_named_only_in_signature_annotations_goes():
    # the program starts with ``from __future__ import annotations``: a function's parameter,
    # return and local annotations are never evaluated; class-level ones (dataclass fields,
    # which typing.get_type_hints reads) are
    src = (
        "from __future__ import annotations\nimport dataclasses\n"
        "class OnlyAnnotated:\n    pass\n"
        "class Field:\n    pass\n"
        "@dataclasses.dataclass\nclass Cfg:\n    f: Field | None = None\n"
        "def run(x: OnlyAnnotated) -> OnlyAnnotated:\n    y: OnlyAnnotated = x\n    return Cfg()\n"
        "run(1)\n"
    )
    out = shake.shake(src)
    assert "class OnlyAnnotated" not in out and "class Field" in out
    module = types.ModuleType("pgolf_shaken_annotations")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        exec(compile(out, "t", "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
