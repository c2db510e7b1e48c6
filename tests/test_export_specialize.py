"""The exported program specialized to its config (pgolf.export.specialize)."""

from __future__ import annotations

import ast
import dataclasses
import textwrap
from functools import cache

import pytest

from pgolf.config import SECTIONS, resolve
from pgolf.export import bundle, specialize

CONFIG = """
import dataclasses

@dataclasses.dataclass(frozen=True)
class Cfg:
    on: bool = True
    mode: str = "a"
    seed: int = 0

    @property
    def fancy(self):
        return self.mode in ("b", "c")

    @property
    def salted(self):
        return self.seed + 1

    def __post_init__(self):
        if self.on:
            pass

@dataclasses.dataclass(frozen=True)
class Run:
    c: Cfg = Cfg()
"""
# what the script's config holds: ``seed`` may change after export, so it is not here
SPEC = specialize.Spec(
    "Run", {"c": "Cfg"}, {"Cfg": {"on": False, "mode": "b", "fancy": True, "salted": 1}}
)


def _spec(body: str) -> str:
    return specialize.specialize(CONFIG + textwrap.dedent(body), SPEC)


def _fn(src: str, name: str) -> str:
    """The unparsed function ``name`` (a method as ``Class.name``) of ``src``."""
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and "." in name and node.name == name.split(".")[0]:
            return next(
                ast.unparse(m) for m in node.body if getattr(m, "name", "") == name.split(".")[1]
            )
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.unparse(node)
    raise KeyError(name)


def test_a_test_of_fixed_fields_keeps_only_the_branch_taken():
    out = _spec(
        """
        def f(cfg: Cfg, x):
            if cfg.on:
                x = fp8(x)
            elif cfg.mode in ("b", "z") and not cfg.on:
                x = x + 1
            else:
                x = x - 1
            y = swa(x) if cfg.fancy else None
            return x, y

        def g(run: Run):
            tc = run.c
            if tc.mode == "b":
                return 1
            return 2
        """
    )
    f = _fn(out, "f")
    assert "fp8" not in f and "x - 1" not in f and "x = x + 1" in f and "y = swa(x)" in f
    assert "if" not in f
    assert "if" not in _fn(out, "g") and "return 1" in _fn(out, "g")


def test_what_may_hold_another_value_is_not_folded():
    out = _spec(
        """
        def default_arg(cfg: Cfg = Cfg()):
            if cfg.on:
                return 1

        def rebound(cfg: Cfg):
            cfg = make()
            if cfg.on:
                return 1

        def untyped(cfg):
            if cfg.on:
                return 1

        def changeable(cfg: Cfg):
            if cfg.seed or cfg.salted:
                return 1

        def called(cfg: Cfg):
            if get(cfg).on:
                return 1

        def before(run: Run):
            for _ in range(2):
                if tc.on:
                    return 1
                tc = run.c

        def generator(cfg: Cfg):
            if cfg.on:
                yield 1
            return 2

        def loop_bound(run: Run):
            for tc in (run.c,):
                if tc.on:
                    return 1
        """
    )
    for name in ("default_arg", "rebound", "untyped", "changeable", "called", "before"):
        assert "if " in _fn(out, name), name
    assert "yield" in _fn(out, "generator") and "if " in _fn(out, "loop_bound")
    # a config class's own methods also run on default and half-built instances
    assert "if self.on" in _fn(out, "Cfg.__post_init__")


def test_self_attributes_are_typed_by_every_store():
    body = textwrap.dedent(
        """
        class Model:
            def __init__(self, cfg: Cfg):
                self.cfg = cfg
                self.n = 0

            def forward(self, x):
                if self.cfg.on:
                    return fp8(x)
                return x

        class Other:
            def __init__(self, cfg: Cfg):
                self.cfg, self.k = cfg, 2

            def step(self):
                if self.cfg.mode == "b":
                    return 1
                return 0
        """
    )
    out = _spec(body)
    assert "fp8" not in _fn(out, "Model.forward")
    assert "if" not in _fn(out, "Other.step")
    # a store on something other than ``self`` may put anything there
    assert "fp8" in _fn(_spec(body + "m = Model(Cfg())\nm.cfg = None\n"), "Model.forward")
    # so may a subclass that stores something else
    sub = "class Sub(Model):\n    def reset(self, other):\n        self.cfg = other\n"
    assert "fp8" in _fn(_spec(body + sub), "Model.forward")
    # and setattr with a computed name
    assert "fp8" in _fn(_spec(body + "setattr(Model(Cfg()), name, 1)\n"), "Model.forward")
    # classes a loader defines count too; a name two classes share types nothing
    loader = "def load():\n    class Sub(Model):\n        def reset(self, o):\n            self.cfg = o\n"
    assert "fp8" in _fn(_spec(body + loader), "Model.forward")
    twice = "def load():\n    class Model:\n        pass\n"
    assert "fp8" in _fn(_spec(body + twice), "Model.forward")


def test_an_and_or_keeps_what_it_evaluates_and_its_truth():
    out = _spec(
        """
        def f(cfg: Cfg, x):
            if x and cfg.fancy:
                return 1
            if x() and cfg.on:
                return 2
            if x or cfg.fancy:
                return 3
        """
    )
    f = _fn(out, "f")
    assert "if x:" in f and "if x() and False:" in f and "if x or True:" in f


def _run_both(body: str, call: str, cfg_values: dict):
    """``call`` evaluated in the program as written and as specialized, on the config."""
    results = []
    for src in (CONFIG + textwrap.dedent(body), _spec(body)):
        space: dict = {}
        exec(compile(src, "p", "exec"), space)
        results.append(eval(call, {**space, "C": space["Cfg"](**cfg_values)}))
    return results


@pytest.mark.parametrize("x", [0, 1, 5])
def test_the_specialized_program_computes_the_same(x):
    body = """
        def f(cfg: Cfg, x):
            out = []
            if cfg.on or x > 3:
                out.append("on")
            if cfg.mode != "a" and x:
                out.append(cfg.mode)
            out.append("f" if cfg.fancy else "p")
            while x and not cfg.on:
                x -= 1
                out.append(x)
            return out
        """
    a, b = _run_both(body, f"f(C, {x})", {"on": False, "mode": "b", "seed": 3})
    assert a == b


@cache
def _program(preset: str, *overrides: str) -> str:
    run = resolve(preset, list(overrides))
    return bundle.shaken_program(bundle.run_modules(run), bundle.package_root(), run)


def _defs(src: str) -> set[str]:
    return {n.name for n in ast.parse(src).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def test_the_default_program_drops_the_features_its_config_switches_off():
    # default: no FP8 matmuls, EMA (no SWA), GPTQ clips by search (no SDClip)
    defs = _defs(_program("default"))
    assert not {"fp8_linear", "_Fp8Linear", "SWA", "sd_clip"} & defs
    assert {"EMA", "Trainer", "GPT"} <= defs
    on = _defs(_program("default", "train.fp8_matmuls=true", "train.averaging=swa"))
    assert {"fp8_linear", "_Fp8Linear", "SWA"} <= on


def test_configs_in_the_script_all_come_from_the_embedded_one():
    # The specialization assumes every config object the script holds has the exported
    # fixed values: built from the embedded JSON (main) or from a checkpoint the run wrote.
    # A new place that builds one (a default section, another file) must be reviewed here.
    builders = {cls.__name__ for cls, _ in SECTIONS.values()} | {"RunConfig", "from_json"}
    for preset in ("default", "record", "tiny"):
        tree = ast.parse(_program(preset))
        sites = set()
        for top in tree.body:
            for node in ast.walk(top):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in builders:
                    sites.add((getattr(top, "name", None), node.func.id))
        own = {(s, s) for s in builders}  # a config class building itself (classmethods)
        assert sites - own <= {
            ("from_json", "RunConfig"),  # the JSON's sections, defaults for those it omits
            ("_main", "from_json"),  # the embedded config
            ("load_checkpoint", "from_json"),  # the run's own checkpoint
        }, sites


def test_the_cache_key_holds_the_fixed_values():
    a = bundle.config_spec(resolve("default"))
    b = bundle.config_spec(resolve("default", ["train.fp8_matmuls=true"]))
    c = bundle.config_spec(resolve("default", ["train.seed=5", "train.max_steps=9"]))
    assert dataclasses.asdict(a) != dataclasses.asdict(b)
    assert dataclasses.asdict(a) == dataclasses.asdict(c)  # only changeable fields differ
    assert "seed" not in a.values["TrainConfig"] and "max_steps" not in a.values["TrainConfig"]
    assert "vocab_size" not in a.values["ModelConfig"] and a.values["DataConfig"]["vocab_size"]
