"""The exported program specialized to its embedded config: branches it cannot take go.

The script embeds one config, and after export only a few fields can change (the
environment's, ``entry.ENV_OVERRIDES``, and the ones the run replaces, ``bundle.RUN_REPLACED``).
Every other field has, in every config object the script builds, the value it had when it was
exported: the script builds its config from the embedded JSON, changes only those fields
(``tests/test_export_checks.py`` holds the carried modules to that) and reads back only configs
it wrote itself (checkpoint, artifact). So an ``if`` whose test reads nothing but such fields
is decided at export: ``specialize`` keeps the branch taken and drops the other, and the tree
shaker then drops what only the dropped branch used (the FP8 matmuls when ``train.fp8_matmuls``
is off, SWA under EMA, ...).

A read ``x.field`` counts as a read of a config field only when ``x``'s type is known:

- a parameter annotated with a config section class (or the run config's class) and no
  default (a default would be another config), never rebound in its function;
- a local every binding of which is such a value (``tc = self.cfg.train``; a tuple assignment
  of a tuple), read after its first binding, which is a statement of the function's body;
- ``run.train`` and the other sections of a value of the run config's class;
- ``self.a`` in a method of a class whose every store of ``.a`` (in the class, its bases and
  subclasses) is ``self.a = <such a value>`` of one type, with no store of ``.a`` on anything
  but ``self`` anywhere and no ``setattr`` with a computed name;
- a call of a module-level function annotated to return such a class (``from_json``).

Properties of a section whose body reads only fixed fields count as fields. Methods of the
config classes themselves are never touched: they also run on default and half-built
instances. Tests fold only when every part is a constant (``==``, ``in``, ``not``, ``and``,
``or``...); an ``and``/``or`` drops its constant operands where that keeps the test's truth
and what it evaluates. A branch holding ``yield``, ``await``, ``global``, ``nonlocal`` or a
walrus (which would change what the function is or binds) stays.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
import symtable
from typing import Any

from pgolf.export import checks, merge, shake

_INST = "instance of "  # type tag of ``self`` in a method: _INST + class name
_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_SIMPLE = (bool, int, float, str, type(None))
_UNFOLDABLE = object()  # what ``_fold`` returns for a value not known at export


@dataclasses.dataclass(frozen=True)
class Spec:
    """What the program's config holds at export."""

    run_class: str  # the run config's class name (its sections are attributes)
    sections: dict[str, str]  # run config attribute -> section class name
    values: dict[str, dict[str, Any]]  # section class -> fixed field or property -> value


def spec_for(run: Any, section_classes: dict[str, type], changeable: set[str]) -> Spec:
    """The fixed values of ``run`` (``section.field`` names in ``changeable`` left out)."""
    values: dict[str, dict[str, Any]] = {}
    for section, cls in section_classes.items():
        obj = getattr(run, section)
        fields = {f.name for f in dataclasses.fields(cls)}
        vals = {
            f: getattr(obj, f)
            for f in fields
            if f"{section}.{f}" not in changeable and _simple(getattr(obj, f))
        }
        # properties: their value where their body reads only these fields (decided on the
        # program's own class in ``specialize``, which drops the others)
        for name, attr in vars(cls).items():
            if isinstance(attr, property) and _simple(getattr(obj, name)):
                vals[name] = getattr(obj, name)
        values[cls.__name__] = vals
    return Spec(type(run).__name__, {s: c.__name__ for s, c in section_classes.items()}, values)


def _simple(v: Any) -> bool:
    if isinstance(v, tuple):
        return all(isinstance(x, _SIMPLE) for x in v)
    return isinstance(v, _SIMPLE)


def specialize(source: str, spec: Spec) -> str:
    """``source`` with the tests decided by the fixed config values folded, their dead branches gone."""
    tree = ast.parse(source)
    shake._unannotate_globals(tree)  # what symtable rejects (the loaders' annotated globals)
    source = ast.unparse(tree)
    tree = ast.parse(source)
    values = _checked_values(tree, spec)
    types = _Types(tree, source, spec)
    known = {}  # id(Attribute) -> value
    for node, _parent, chain in types.nodes:
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            if types.config_code(node) or any(
                isinstance(n, ast.Call) for n in ast.walk(node.value)
            ):
                continue  # config methods see half-built instances; a call's effect must stay
            t = types.type_of(node.value, chain)
            if t in values and node.attr in values[t]:
                known[id(node)] = values[t][node.attr]
    _Folder(known).visit(tree)
    return ast.unparse(tree)


def _checked_values(tree: ast.Module, spec: Spec) -> dict[str, dict[str, Any]]:
    """``spec.values`` without fields a section sets itself and properties reading others."""
    out = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name not in spec.values:
            continue
        vals = dict(spec.values[node.name])
        # a field a section normalizes (``object.__setattr__(self, "gptq", ...)``) is left alone
        for n in ast.walk(node):
            if isinstance(n, ast.Call) and ast.unparse(n.func).endswith("setattr__"):
                key = n.args[1] if len(n.args) > 1 else None
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    vals = {}
                    break
                vals.pop(key.value, None)
        fields = {
            s.target.id
            for s in node.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
        }
        cls = checks._Class(fields, {f for f in fields if f in vals}, {}, None)
        methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
        props = {
            n
            for n, m in methods.items()
            if any(ast.unparse(d) == "property" for d in m.decorator_list)
        }
        for name in props:
            cls.props[name] = checks.UNKNOWN
        for _ in range(len(props) + 1):  # properties reading properties: to a fixed point
            for name in props:
                cls.props[name] = checks._function_reads(methods[name], cls)
        for name in props | (set(vals) - fields):
            reads = cls.props.get(name)
            if reads is None or not reads <= cls.fixed:
                vals.pop(name, None)
        out[node.name] = vals
    return out


class _Types:
    """The config types of names, ``self`` attributes and calls (see the module's rules)."""

    def __init__(self, tree: ast.Module, source: str, spec: Spec):
        self.spec = spec
        top = symtable.symtable(source, "program", "exec")
        self.nodes = list(merge._walk_scoped([(n, tree) for n in tree.body], (top,)))
        self.parents = {id(n): p for n, p, _ in self.nodes}
        self.chains = {id(n): c for n, _, c in self.nodes}
        # every class, loaders' included; a name defined twice types nothing
        every = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
        names = [n.name for n in every]
        self.ambiguous = {n for n in names if names.count(n) > 1}
        self.classes = {n.name: n for n in every if n.name not in self.ambiguous}
        self.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        module_binds: dict[str, int] = {}
        for n in tree.body:
            for t in _bound_names(n):
                module_binds[t] = module_binds.get(t, 0) + 1
        self.once = {n for n, k in module_binds.items() if k == 1}
        self.config_classes = {spec.run_class, *spec.sections.values()}
        self.func_of: dict[int, ast.FunctionDef] = {}  # id(table) -> its function
        self.owner: dict[int, ast.ClassDef] = {}  # id(method) -> its class
        for node, parent, chain in self.nodes:
            if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in parent.body:
                self.func_of[id(chain[-1])] = parent
            if isinstance(parent, ast.ClassDef) and isinstance(node, ast.FunctionDef):
                self.owner[id(node)] = parent
        self.table_of = {id(f): t for t, f in self.func_of.items()}
        self.bindings: dict[tuple[int, str], list] = {}  # variable -> its bindings' types
        self._collect_bindings()
        self.var_cache: dict[tuple[int, str], str | None] = {}
        self.attr_cache: dict[tuple[str, str], str | None] = {}
        self.dynamic_setattr = False
        self.dynamic_replace = False
        self.attr_stores: dict[str, list[ast.Attribute]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Load):
                self.attr_stores.setdefault(node.attr, []).append(node)
            if isinstance(node, ast.Call) and _callee(node).endswith("setattr"):
                key = node.args[1] if len(node.args) > 1 else None
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    self.attr_stores.setdefault(key.value, []).append(node)
                elif not self.config_code(node):
                    self.dynamic_setattr = True
            # ``dataclasses.replace(x, a=...)`` stores ``a`` on a copy of a dataclass
            if isinstance(node, ast.Call) and _callee(node).endswith("replace"):
                for kw in node.keywords:
                    if kw.arg is None:
                        self.dynamic_replace = True
                    else:
                        self.attr_stores.setdefault(kw.arg, []).append(node)

    def config_code(self, node: ast.AST) -> bool:
        """Whether ``node`` is inside a config class (its methods see half-built instances)."""
        while id(node) in self.parents:
            node = self.parents[id(node)]
            if isinstance(node, ast.ClassDef) and node.name in self.config_classes:
                return True
        return False

    def _var(self, name: str, chain: tuple) -> tuple[int, str] | None:
        i = merge._binding_scope(name, chain)
        return None if i == 0 else (id(chain[i]), name)

    def _bind(
        self, name: str, chain: tuple, typ: Any, where: tuple[int, bool] = (0, False)
    ) -> None:
        """Note a binding of ``name`` (its type, or the expression it binds) at (line, top)."""
        var = self._var(name, chain)
        if var is not None:
            self.bindings.setdefault(var, []).append((typ, *where))

    def _collect_bindings(self) -> None:
        for node, parent, chain in self.nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._params(node)
            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                self._bind(node.id, chain, self._store_value(node, parent), _where(node, self))
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self._bind(node.name, chain, None)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for a in node.names:
                    self._bind((a.asname or a.name).split(".")[0], chain, None)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self._bind(node.name, chain, None)
            elif isinstance(node, (ast.Global, ast.Nonlocal)):
                for n in node.names:
                    self._bind(n, chain, None)
            elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
                self._bind(node.name, chain, None)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                self._bind(node.rest, chain, None)

    def _params(self, fn: ast.FunctionDef) -> None:
        table = self.table_of.get(id(fn))
        if table is None:
            return
        a = fn.args
        positional = [*a.posonlyargs, *a.args]
        defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        params = [
            *zip(positional, defaults, strict=True),
            *zip(a.kwonlyargs, a.kw_defaults, strict=True),
        ]
        cls = self.owner.get(id(fn))
        plain = not any(
            ast.unparse(d) in ("staticmethod", "classmethod") for d in fn.decorator_list
        )
        for i, (arg, default) in enumerate(params):
            typ = None
            if i == 0 and cls is not None and plain and positional and arg is positional[0]:
                typ = _INST + cls.name
            elif default is None and arg.annotation is not None:
                typ = self._class_named(arg.annotation)
            self.bindings.setdefault((table, arg.arg), []).append((typ, -1, True))
        for extra in (a.vararg, a.kwarg):
            if extra is not None:
                self.bindings.setdefault((table, extra.arg), []).append((None, -1, True))

    def _class_named(self, ann: ast.expr) -> str | None:
        name = ann.value if isinstance(ann, ast.Constant) else getattr(ann, "id", None)
        return name if name in self.config_classes else None

    def _store_value(self, node: ast.expr, parent: ast.AST) -> tuple | None:
        """("expr", the value) a store target binds, where that is plain to see."""
        if isinstance(parent, ast.Assign) and node in parent.targets:
            return ("expr", parent.value)
        if isinstance(parent, (ast.Tuple, ast.List)):
            assign = self.parents.get(id(parent))
            v = getattr(assign, "value", None)
            if (
                isinstance(assign, ast.Assign)
                and parent in assign.targets
                and isinstance(v, (ast.Tuple, ast.List))
                and len(v.elts) == len(parent.elts)
                and not any(isinstance(e, ast.Starred) for e in (*v.elts, *parent.elts))
            ):
                return ("expr", v.elts[parent.elts.index(node)])
        return None

    def var_type(self, var: tuple[int, str], line: int) -> str | None:
        bindings = self.bindings.get(var, [])
        if var not in self.var_cache:
            self.var_cache[var] = None  # a cycle is unknown
            types = set()
            for b, _, _ in bindings or [(None, 0, False)]:
                if isinstance(b, tuple):
                    b = self.type_of(b[1], self.chains[id(b[1])])
                types.add(b)
            self.var_cache[var] = types.pop() if len(types) == 1 else None
        # bound from the start (a parameter), or read after a first binding that is a
        # statement of the function's body (so it ran before the read)
        first = min(bindings, key=lambda b: b[1], default=None)
        if first is None or not first[2] or (first[1] >= 0 and line <= first[1]):
            return None
        return self.var_cache[var]

    def type_of(self, e: ast.expr, chain: tuple) -> str | None:
        if isinstance(e, ast.Name):
            var = self._var(e.id, chain)
            return None if var is None else self.var_type(var, e.lineno)
        if isinstance(e, ast.Attribute):
            t = self.type_of(e.value, chain)
            if t == self.spec.run_class:
                return self.spec.sections.get(e.attr)
            if t is not None and t.startswith(_INST):
                return self.attr_type(t[len(_INST) :], e.attr)
            return None
        if (
            isinstance(e, ast.Call)
            and isinstance(e.func, ast.Name)
            and merge._binding_scope(e.func.id, chain) == 0
            and e.func.id in self.once
        ):
            fn = self.functions.get(e.func.id)
            plain = fn is not None and all(
                ast.unparse(d) in shake.PURE_DECORATORS for d in fn.decorator_list
            )
            if plain and fn.returns is not None:
                return self._class_named(fn.returns)
        return None

    def _family(self, name: str) -> set[str] | None:
        """The class, its bases and subclasses in the program (None: a name is ambiguous)."""

        def bases(c: str) -> set[str]:
            node = self.classes.get(c)
            return {b.id for b in node.bases if isinstance(b, ast.Name)} if node else set()

        up, todo = set(), [name]
        while todo:
            c = todo.pop()
            if c not in up:
                up.add(c)
                todo += bases(c)
        family = set(up)
        changed = True
        while changed:  # and every class below any of them
            more = {c for c in self.classes if bases(c) & family} - family
            family |= more
            changed = bool(more)
        return None if family & self.ambiguous else family

    def attr_type(self, cls: str, attr: str) -> str | None:
        key = (cls, attr)
        if key in self.attr_cache:
            return self.attr_cache[key]
        self.attr_cache[key] = None  # a cycle is unknown
        if self.dynamic_setattr:
            return None
        family = self._family(cls)
        if family is None:
            return None
        nodes = [self.classes[c] for c in family if c in self.classes]
        if self.dynamic_replace and any(_is_dataclass(c) for c in nodes):
            return None
        types = set()
        for store in self.attr_stores.get(attr, []):
            if isinstance(store, ast.Call):  # setattr(x, "attr", ...), replace(x, attr=...)
                return None
            receiver = store.value
            parent = self.parents.get(id(store))
            chain = self.chains.get(id(store))
            if not isinstance(receiver, ast.Name) or chain is None:
                return None
            owner = self.type_of(receiver, chain)
            if owner is None or not owner.startswith(_INST):
                return None  # a store on something that may be one of ours
            if owner[len(_INST) :] not in family:
                continue
            value = self._store_value(store, parent)
            if value is None:
                return None
            types.add(self.type_of(value[1], self.chains[id(value[1])]))
        for node in nodes:  # dataclass fields, class attributes, methods and properties
            for s in node.body:
                if attr in _bound_names(s):
                    ann = getattr(s, "annotation", None)
                    typed = isinstance(s, ast.AnnAssign) and ann is not None
                    types.add(self._class_named(ann) if typed else None)
        t = types.pop() if len(types) == 1 else None
        self.attr_cache[key] = t
        return t


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")


def _is_dataclass(node: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(d) for d in node.decorator_list)


def _bound_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    targets = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    out = set()
    for t in targets:
        out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


def _where(node: ast.Name, types: _Types) -> tuple[int, bool]:
    """(last line of the binding statement, whether it is a statement of its function's body)."""
    stmt: ast.AST = node
    while id(stmt) in types.parents and not isinstance(stmt, ast.stmt):
        stmt = types.parents[id(stmt)]
    fn = types.parents.get(id(stmt))
    top = isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt in fn.body
    return (getattr(stmt, "end_lineno", None) or node.lineno, top)


def _changes_scope(nodes: list[ast.AST]) -> bool:
    """Whether dropping ``nodes`` could change what their function is or binds."""
    bad = (ast.Yield, ast.YieldFrom, ast.Await, ast.Global, ast.Nonlocal, ast.NamedExpr)
    return any(isinstance(n, bad) for x in nodes for n in ast.walk(x))


class _Folder(ast.NodeTransformer):
    def __init__(self, known: dict[int, Any]):
        self.known = known

    def _fold(self, e: ast.expr) -> Any:
        """The value of ``e`` if it is decided at export, else ``_UNFOLDABLE``."""
        if isinstance(e, ast.Constant):
            return e.value
        if id(e) in self.known:
            return self.known[id(e)]
        if isinstance(e, (ast.Tuple, ast.List)):
            parts = [self._fold(x) for x in e.elts]
            return _UNFOLDABLE if _UNFOLDABLE in parts else tuple(parts)
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.Not, ast.USub)):
            v = self._fold(e.operand)
            if v is _UNFOLDABLE:
                return v
            if isinstance(e.op, ast.Not):
                return not v
            return -v if isinstance(v, (int, float)) else _UNFOLDABLE
        if isinstance(e, ast.Compare) and all(type(op) in _CMP for op in e.ops):
            parts = [self._fold(x) for x in (e.left, *e.comparators)]
            if _UNFOLDABLE in parts:
                return _UNFOLDABLE
            try:
                return all(
                    _CMP[type(op)](a, b) for op, a, b in zip(e.ops, parts, parts[1:], strict=False)
                )
            except TypeError:
                return _UNFOLDABLE
        if isinstance(e, ast.BoolOp):
            parts = [self._fold(x) for x in e.values]
            if _UNFOLDABLE in parts:
                return _UNFOLDABLE
            out = parts[0]
            for v in parts[1:]:
                if (not out) if isinstance(e.op, ast.And) else bool(out):
                    break
                out = v
            return out
        return _UNFOLDABLE

    def _test(self, e: ast.expr) -> ast.expr | bool:
        """``e`` as a test (only its truth counts): True/False when decided, else simplified."""
        v = self._fold(e)
        if v is not _UNFOLDABLE:
            return bool(v)
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            inner = self._test(e.operand)
            return ast.UnaryOp(ast.Not(), inner) if isinstance(inner, ast.expr) else e
        if isinstance(e, ast.BoolOp):
            # ``and``: a true operand decides nothing and goes; a false one ends the test
            # (the ones before it still run: kept). ``or`` the other way round.
            stop = isinstance(e.op, ast.Or)
            kept: list[ast.expr] = []
            for x in e.values:
                t = self._test(x)
                if t is (not stop):
                    continue
                if t is stop:
                    if not kept:
                        return stop
                    kept.append(ast.Constant(stop))
                    break
                kept.append(t)
            if not kept:
                return not stop
            return kept[0] if len(kept) == 1 else ast.BoolOp(e.op, kept)
        return e

    def _branches(self, node: ast.If | ast.IfExp) -> tuple[Any, Any] | None:
        """(taken, not taken) when ``node``'s test folds; else None, the test simplified."""
        self.generic_visit(node)
        t = self._test(node.test)
        if isinstance(t, ast.expr):
            node.test = t
            return None
        return (node.body, node.orelse) if t else (node.orelse, node.body)

    def visit_If(self, node: ast.If) -> Any:
        branches = self._branches(node)
        if branches is None or _changes_scope([node.test, *branches[1]]):
            return node
        return branches[0] or ast.Pass()

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        branches = self._branches(node)
        if branches is None or _changes_scope([node.test, branches[1]]):
            return node
        return branches[0]

    def visit_While(self, node: ast.While) -> Any:
        self.generic_visit(node)
        t = self._test(node.test)
        if isinstance(t, ast.expr):
            node.test = t
        return node
