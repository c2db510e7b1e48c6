"""Config checks dropped from the exported script (pgolf.export.checks) and the ones kept."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import sys
import types
from functools import cache
from pathlib import Path

import pytest

from pgolf.config import SECTIONS, from_json, resolve
from pgolf.export import bundle, checks

SRC = """
def need(cond, msg):
    if not cond:
        raise ValueError(msg)

LIMITS = ("a", "b")

class Cfg:
    a: int = 1
    b: int = 2
    seed: int = 0
    name: str = "x"

    @property
    def total(self):
        return self.a + self.b

    @property
    def salted(self):
        return self.seed + self.a

    def __post_init__(self):
        need(self.a >= 0, "")
        need(self.total < 100, "")
        need(self.salted >= 0, "")
        if self.b > 50:
            raise ValueError("")
        for name in ("a", "b"):
            need(getattr(self, name) < 10, "")
        for name in ("a", "seed"):
            need(getattr(self, name) >= 0, "")
        bad = [x for x in LIMITS if x not in self.name]
        need(len(bad) < 3, "")
        kept = [self.a]
        kept.append(self.seed)
        need(len(kept) == 2, "")
        helper(self)
        self._more()

    def _more(self):
        need(self.b != 7, "")
        need(self.seed != 7, "")

def helper(cfg):
    need(cfg.a != 5, "")
"""


def _stripped() -> str:
    fields = {"a", "b", "seed", "name"}
    return checks.strip_checks(SRC, {"Cfg": (fields, {"seed"})})


def test_checks_of_fixed_fields_go_and_the_others_stay():
    out = _stripped()
    post = out[out.index("def __post_init__") : out.index("def _more")]
    # fixed: a, b, their property, a loop over fixed names, an assignment only they read
    for gone in ("self.a >= 0", "self.total", "self.b > 50", "< 10", "bad", "LIMITS if"):
        assert gone not in post, gone
    # reads a changeable field (directly, through a property, in a loop): stays
    assert "self.salted >= 0" in post
    assert "for name in ('a', 'seed')" in post
    # a value that kept code mutates, self passed on, a method called: stay
    assert "kept.append(self.seed)" in post and "len(kept) == 2" in post
    assert "helper(self)" in post and "self._more()" in post
    more = out[out.index("def _more") :]
    assert "self.b != 7" not in more and "self.seed != 7" in more
    assert "cfg.a != 5" in out  # not a method of the class: untouched


def test_the_stripped_class_still_rejects_bad_changeable_values():
    space: dict = {}
    exec(compile(_stripped(), "t", "exec"), space)

    def make(**kw):
        c = space["Cfg"].__new__(space["Cfg"])
        for k, v in kw.items():
            setattr(c, k, v)
        c.__post_init__()

    make()
    make(a=99)  # a fixed field: its check is gone (the exported config passed it)
    for bad in (-1, 7):
        with pytest.raises(ValueError):
            make(seed=bad)


def test_need_counts_as_a_check_only_if_it_is_one():
    # a ``need`` that does something else is a call like any other: it stays
    src = "def need(c, m):\n    print(c)\nclass K:\n    x: int = 1\n    def __post_init__(self):\n"
    src += "        need(self.x > 0, '')\n"
    out = checks.strip_checks(src, {"K": ({"x"}, set())})
    assert "need(self.x > 0" in out


def test_a_method_without_checks_left_goes():
    src = "def need(c, m):\n    if not c:\n        raise ValueError(m)\n"
    src += "class K:\n    x: int = 1\n    def __post_init__(self):\n"
    src += "        need(self.x > 0, '')\n"
    out = checks.strip_checks(src, {"K": ({"x"}, set())})
    assert "__post_init__" not in out and "class K" in out


@cache
def _program(preset: str) -> str:
    run = resolve(preset)
    return bundle.shaken_program(bundle.run_modules(run), bundle.package_root(), run)


def _post_inits(src: str) -> dict[str, str]:
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.ClassDef):
            for m in node.body:
                if isinstance(m, ast.FunctionDef) and m.name == "__post_init__":
                    out[node.name] = ast.unparse(m)
    return out


@pytest.mark.parametrize("preset", ["default", "record", "tiny"])
def test_every_changeable_field_keeps_its_checks(preset):
    posts = _post_inits(_program(preset))
    sections = bundle.config_sections()
    for key in bundle.changeable_fields():
        section, field = key.split(".")
        cls = SECTIONS[section][0].__name__
        assert field in sections[cls][1]
        source = Path(inspect.getsourcefile(SECTIONS[section][0])).read_text()
        if f"self.{field}" in source.split("def __post_init__")[1].split("\n    @")[0]:
            assert f"self.{field}" in posts.get(cls, "") or field in posts.get(cls, ""), key
    # the environment's overrides of the challenge are among them
    assert {"train.seed", "train.train_seconds", "train.max_steps"} <= bundle.changeable_fields()
    assert "need(self.max_steps >= 0" in posts["TrainConfig"]


def test_the_run_replaces_only_changeable_config_fields():
    # dataclasses.replace on a config section in the carried modules may only set fields
    # whose checks stay (keywords that name a field of some section; ** only where known)
    changeable = {k.split(".")[1] for k in bundle.changeable_fields()}
    section_fields = {f.name for cls, _ in SECTIONS.values() for f in dataclasses.fields(cls)}
    starred = []
    for name in bundle.run_modules(resolve("record")):
        tree = ast.parse(bundle.module_path(name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "dataclasses.replace":
                for kw in node.keywords:
                    if kw.arg is None:
                        starred.append((name, ast.unparse(node)))
                    elif kw.arg in section_fields and kw.arg not in SECTIONS:
                        assert kw.arg in changeable, (name, ast.unparse(node))
    # align_with_tokenizer's vocab_size/bos_id; replace_fields/with_overrides (env and JSON)
    assert {n for n, _ in starred} <= {"pgolf.train.loop", "pgolf.config", "pgolf.config.base"}
    loop = bundle.module_path("pgolf.train.loop").read_text()
    assert re.search(r'updates\["vocab_size"\]|updates\["bos_id"\]', loop)


def test_the_exported_config_sections_still_build_and_check():
    # run the program's definitions (not main): the embedded config rebuilds, and a bad
    # value of a field the environment sets is still refused
    src = _program("default")
    body, last = src.rsplit("\n", 1)
    assert last == "main(C, __file__)"
    module = types.ModuleType("pgolf_exported_program")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        exec(compile(body, "program", "exec"), module.__dict__)
        space = module.__dict__
        run = resolve("default")
        cfg = space["from_json"](run.to_json())
        assert cfg.to_json() == from_json(run.to_json()).to_json()
        for key, value in (("train.train_seconds", "-1"), ("train.max_steps", "-2")):
            with pytest.raises(space["ConfigError"]):
                cfg.with_overrides([f"{key}={value}"])
        # a fixed field's check is gone: the value passes (it cannot occur in the script)
        cfg.with_overrides(["train.warmdown_frac=2"])
    finally:
        del sys.modules[module.__name__]
