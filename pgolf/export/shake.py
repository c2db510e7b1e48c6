"""Tree shaking of the merged program: what nothing reachable uses is dropped.

The merged program (pgolf.export.merge) carries whole modules, but the exported script runs
one path through them. Starting from the statements that do more than define a name (the
roots: imports, calls, the last line that runs ``main``), we keep what they use, then what
that uses, until nothing new is reached:

* **module-level definitions** (functions, classes, constants) and the ones a loader
  function (an optional module run on first import) binds as globals, reached by a read of
  their *global* name: scopes come from :mod:`symtable`, so a local or a keyword that shares
  a definition's spelling does not keep it;
* **methods** of module-level classes, reached by an attribute or a string of their name
  anywhere in kept code (``x.name``, ``getattr(x, "name")``). A method another library may
  call (a name of one of the class's external bases, e.g. ``nn.Module.forward``, or of a
  common protocol: files, mappings, iterators, modules, optimizers) and dunders always stay.
  Where kept code builds attribute names at run time (``getattr(x, f"...")``, ``vars``,
  ``__dict__``, ``dir``) no method is dropped.

Code after a ``return``, ``raise``, ``continue`` or ``break`` in the same block never runs
and goes first. Everything is conservative: a statement whose effect we cannot see (a call,
a decorator that may register, a subscript store) is a root.
"""

from __future__ import annotations

import ast
import collections.abc
import contextlib
import io
import symtable
import threading

from pgolf.export.merge import _binding_scope, _walk_scoped

# Decorators that only wrap: a definition carrying just these has no effect until it is used.
PURE_DECORATORS = frozenset(
    {
        "dataclasses.dataclass",
        "functools.cache",
        "functools.lru_cache",
        "contextlib.contextmanager",
        "torch.no_grad",
    }
)
# ... and, on a method, these (``@x.setter`` shares the property's name, so both go together).
PURE_METHOD_DECORATORS = PURE_DECORATORS | {
    "property",
    "staticmethod",
    "classmethod",
    "functools.cached_property",
}
# Calls that only build a value from their arguments (builtins pgolf never rebinds).
PURE_CALLS = frozenset(
    {
        *("sorted", "set", "frozenset", "dict", "list", "tuple", "range", "len", "min", "max"),
        *("str", "int", "float", "bool", "repr", "TypeVar", "typing.TypeVar"),
        *("re.compile", "struct.Struct", "np.dtype", "numpy.dtype"),
    }
)
_PURE_METHODS = frozenset({"keys", "values", "items", "copy"})
# Attribute reads that another library may make on an object of ours (duck typing).
_PROTOCOL_TYPES = (
    object,
    io.IOBase,
    io.TextIOBase,
    io.BufferedIOBase,
    dict,
    list,
    Exception,
    threading.Thread,
    contextlib.AbstractContextManager,
    collections.abc.Mapping,
    collections.abc.Sequence,
    collections.abc.Iterator,
)
_DYNAMIC_ATTR = frozenset({"getattr", "hasattr", "setattr", "delattr", "attrgetter"})
_INTROSPECTION = frozenset({"vars", "dir", "__dict__", "getmembers", "methodcaller"})


def protocol_names() -> set[str]:
    names = {n for t in _PROTOCOL_TYPES for n in dir(t)}
    try:  # the exporter runs where torch is installed; without it the bases say the rest
        import torch

        for t in (torch.nn.Module, torch.optim.Optimizer, torch.autograd.Function):
            names |= set(dir(t))
    except ImportError:  # pragma: no cover
        pass
    return names


def _decorators(node: ast.AST) -> list[str]:
    return [ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in node.decorator_list]


def defined_name(node: ast.stmt) -> str | None:
    """The name a statement only defines (no other effect when it runs), else None."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        if any(d not in PURE_DECORATORS for d in _decorators(node)):
            return None
        if isinstance(node, ast.ClassDef) and node.keywords:
            return None
        return node.name
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if len(targets) != 1 or not isinstance(targets[0], ast.Name) or node.value is None:
            return None
        return targets[0].id if pure(node.value) else None
    return None


def pure(node: ast.expr) -> bool:
    """Whether evaluating ``node`` has no effect but its value (so an unused one can go).

    Displays, operators, comprehensions, attribute and subscript reads, lambdas, and calls
    of a few functions known to only build a value (``sorted``, ``re.compile``, ...).
    """
    for n in ast.walk(node):
        if isinstance(n, (ast.NamedExpr, ast.Await, ast.Yield, ast.YieldFrom)):
            return False
        if isinstance(n, ast.Call):
            f = ast.unparse(n.func)
            method = isinstance(n.func, ast.Attribute) and n.func.attr in _PURE_METHODS
            if f not in PURE_CALLS and not (method and not n.args and not n.keywords):
                return False
    return True


def _method_name(node: ast.stmt) -> str | None:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    if node.name.startswith("__") and node.name.endswith("__"):
        return None
    for d in _decorators(node):
        if d not in PURE_METHOD_DECORATORS and not d.endswith((".setter", ".deleter")):
            return None
    return node.name


_TERMINAL = (ast.Return, ast.Raise, ast.Continue, ast.Break)


def drop_unreachable(tree: ast.AST) -> None:
    """Remove the statements after a ``return``/``raise``/``continue``/``break`` in a block."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if not isinstance(block, list) or not block or not isinstance(block[0], ast.stmt):
                continue
            for i, stmt in enumerate(block):
                if isinstance(stmt, _TERMINAL):
                    del block[i + 1 :]
                    break


class _Unit:
    """A statement (or a class's methods of one name) that is kept or dropped as a whole."""

    def __init__(self, nodes: list[ast.stmt], name: str | None, kind: str, parent: int | None):
        self.nodes = nodes
        self.name = name  # what reaches it; None: a root (kept with its parent)
        self.kind = kind  # "global" (reached by a global read) or "method" (by an attribute)
        self.parent = parent  # index of the unit it sits in
        self.globals: set[str] = set()  # global names its code reads or writes
        self.attrs: set[str] = set()  # attribute names and strings its code uses
        self.dynamic = False  # builds attribute names at run time


def _units(tree: ast.Module) -> tuple[list[_Unit], dict[int, int]]:
    """The units of ``tree`` and, for every node, the index of the innermost unit it is in."""
    units: list[_Unit] = []
    owner: dict[int, int] = {}

    def add(nodes: list[ast.stmt], name, kind, parent) -> int:
        units.append(_Unit(nodes, name, kind, parent))
        i = len(units) - 1
        for n in nodes:
            for x in ast.walk(n):
                owner[id(x)] = i
        return i

    defined: dict[str, int] = {}
    for stmt in tree.body:
        target = stmt.targets[0] if isinstance(stmt, ast.Assign) else None
        if (
            isinstance(target, ast.Subscript)
            and len(stmt.targets) == 1
            and isinstance(target.value, ast.Name)
            and target.value.id in defined
            and pure(target.slice)
            and pure(stmt.value)
        ):
            # ``X[k] = v`` filling a registry X: it goes with X
            j = defined[target.value.id]
            units[j].nodes.append(stmt)
            for x in ast.walk(stmt):
                owner[id(x)] = j
            continue
        i = add([stmt], defined_name(stmt), "global", None)
        if units[i].name:
            defined[units[i].name] = i
        if isinstance(stmt, ast.ClassDef):
            groups: dict[str, list[ast.stmt]] = {}
            for s in stmt.body:
                groups.setdefault(_method_name(s) or "", []).append(s)
            for name, nodes in groups.items():
                # every definition of a name must be droppable for the name to go
                if name and all(_method_name(s) == name for s in nodes):
                    add(nodes, name, "method", i)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # a loader: definitions it binds as globals are reached like module-level ones
            declared = {n for s in stmt.body if isinstance(s, ast.Global) for n in s.names}
            for s in stmt.body:
                name = defined_name(s)
                if name in declared:
                    add([s], name, "global", i)
    return units, owner


def _external_names(tree: ast.Module, classes: dict[str, ast.ClassDef]) -> dict[str, set | None]:
    """For each class: the attribute names its external bases have (None: unknown, keep all)."""
    space: dict = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            # a base an import that fails would bind stays unknown (its methods all stay)
            with contextlib.suppress(Exception):
                exec(compile(ast.Module([stmt], []), "<imports>", "exec"), space)
    out: dict[str, set | None] = {}

    def names(cls: ast.ClassDef, seen: frozenset) -> set | None:
        acc: set = set()
        for b in cls.bases:
            if isinstance(b, ast.Name) and b.id in classes and b.id not in seen:
                sub = names(classes[b.id], seen | {b.id})
                if sub is None:
                    return None
                acc |= sub
                continue
            try:
                base = eval(compile(ast.Expression(b), "<base>", "eval"), dict(space))
            except Exception:  # noqa: BLE001
                return None
            if not isinstance(base, type):
                return None
            acc |= set(dir(base))
        return acc

    for name, cls in classes.items():
        out[name] = names(cls, frozenset({name}))
    return out


def _unannotate_globals(tree: ast.AST) -> None:
    """``x: T = v`` for a name a function declares global becomes ``x = v``.

    A loader binds its module's annotated constants that way, which Python rejects
    (the minifier drops such annotations anyway); symtable needs a valid program.
    """
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        declared = {n for s in fn.body if isinstance(s, ast.Global) for n in s.names}
        body = []
        for s in fn.body:
            if isinstance(s, ast.AnnAssign) and getattr(s.target, "id", None) in declared:
                if s.value is None:
                    continue
                s = ast.copy_location(ast.Assign([s.target], s.value), s)
            body.append(s)
        fn.body = body


def _signature_annotations(tree: ast.Module) -> set[int]:
    """Nodes of functions' parameter and return annotations and of local annotations.

    The program starts with ``from __future__ import annotations`` (merge.FUTURE), so they
    are strings nothing evaluates (the minifier drops them; custom ops get theirs as code,
    see merge._keep_signature_annotations), and a class named only there (``swa: SWA | None``)
    is not used. Module- and class-level annotations stay reads: ``typing.get_type_hints``
    evaluates the config sections' field annotations.
    """
    out: set[int] = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = fn.args
        anns = [
            x.annotation
            for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
            if x is not None and x.annotation is not None
        ]
        anns += [fn.returns] if fn.returns is not None else []
        todo = list(fn.body)
        while todo:  # local annotations (a class's own, in a loader, are its fields)
            s = todo.pop()
            if isinstance(s, ast.AnnAssign):
                anns.append(s.annotation)
            if not isinstance(s, ast.ClassDef):
                todo += [c for c in ast.iter_child_nodes(s) if isinstance(c, ast.stmt)]
        out |= {id(n) for ann in anns for n in ast.walk(ann)}
    return out


def shake(source: str) -> str:
    """``source`` without the definitions and methods nothing reachable uses (module doc)."""
    for _ in range(4):
        source = _shake_once(source)
        pruned = prune_registries(source)
        if pruned == source:
            break
        source = pruned
    return source


# Uses of a registry ``X`` that read its keys only.
_KEY_CALLS = frozenset({"set", "sorted", "list", "tuple", "frozenset", "len"})


def prune_registries(source: str) -> str:
    """Parts of a registry's entries that nothing reads become ``None``.

    A registry is a module-level ``X = {key: (a, b, ...)}`` whose values are tuples of one
    length. Where every use of ``X`` reads its keys (``k in X``, ``for k in X``,
    ``sorted(X)``) or unpacks its entries in a loop (``for k, (a, _) in X.items()``,
    ``for a, _ in X.values()``) and the name a part is unpacked into is never read there,
    that part is replaced by ``None`` in every entry, and what only it named can be shaken.
    """
    tree = ast.parse(source)
    parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    registries: dict[str, int] = {}
    for stmt in tree.body:
        target = getattr(stmt, "target", None) or (getattr(stmt, "targets", None) or [None])[0]
        value = getattr(stmt, "value", None)
        if (
            isinstance(stmt, (ast.Assign, ast.AnnAssign))
            and isinstance(target, ast.Name)
            and isinstance(value, ast.Dict)
            and value.values
            and None not in value.keys
            and all(isinstance(v, ast.Tuple) for v in value.values)
            and len({len(v.elts) for v in value.values}) == 1
        ):
            if target.id in registries:
                registries[target.id] = -1  # bound twice: leave it
            else:
                registries[target.id] = len(value.values[0].elts)
    if not registries:
        return source
    read: dict[str, set[int]] = {n: set() for n in registries}
    table = symtable.symtable(source, "program", "exec")
    for node, parent, chain in _walk_scoped([(n, tree) for n in tree.body], (table,)):
        if not isinstance(node, ast.Name) or node.id not in registries:
            continue
        if _binding_scope(node.id, chain) != 0 or isinstance(parent, ast.Module):
            continue
        n = registries[node.id]
        if isinstance(node.ctx, ast.Store) and _is_definition(parent, node, tree):
            continue
        read[node.id] |= _parts_read(node, parent, parents, n)
    for stmt in tree.body:
        target = getattr(stmt, "target", None) or (getattr(stmt, "targets", None) or [None])[0]
        name = getattr(target, "id", None)
        if name in registries and registries[name] > 0 and isinstance(stmt.value, ast.Dict):
            for v in stmt.value.values:
                for i in range(len(v.elts)):
                    if i not in read[name] and not (
                        isinstance(v.elts[i], ast.Constant) and v.elts[i].value is None
                    ):
                        v.elts[i] = ast.Constant(None)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def _is_definition(parent: ast.AST, node: ast.Name, tree: ast.Module) -> bool:
    return isinstance(parent, (ast.Assign, ast.AnnAssign)) and parent in tree.body


def _parts_read(node: ast.Name, parent: ast.AST, parents: dict, n: int) -> set[int]:
    """Which parts of ``X``'s entries this use of ``X`` may read (all unless we can tell)."""
    every = set(range(n))
    if not isinstance(node.ctx, ast.Load):
        return every
    if (
        isinstance(parent, ast.Compare)
        and node in parent.comparators
        and all(isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops)
    ):
        return set()
    if isinstance(parent, (ast.For, ast.comprehension)) and parent.iter is node:
        return set()
    if (
        isinstance(parent, ast.Call)
        and isinstance(parent.func, ast.Name)
        and parent.func.id in _KEY_CALLS
        and parent.args == [node]
        and not parent.keywords
    ):
        return set()
    call = parents.get(id(parent))
    if not (
        isinstance(parent, ast.Attribute)
        and parent.attr in ("items", "values")
        and isinstance(call, ast.Call)
        and not call.args
        and not call.keywords
    ):
        return every
    loop = parents.get(id(call))
    if not isinstance(loop, (ast.For, ast.comprehension)) or loop.iter is not call:
        return every
    target = loop.target
    if parent.attr == "items":
        if not (isinstance(target, ast.Tuple) and len(target.elts) == 2):
            return every
        target = target.elts[1]
    if not (isinstance(target, ast.Tuple) and len(target.elts) == n):
        return every
    # the names the parts are unpacked into, and whether the loop's scope reads them
    scope = loop
    while not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module)):
        scope = parents.get(id(scope))
        if scope is None:
            return every
    loads = {
        x.id for x in ast.walk(scope) if isinstance(x, ast.Name) and isinstance(x.ctx, ast.Load)
    }
    out = set()
    for i, part in enumerate(target.elts):
        if not isinstance(part, ast.Name) or part.id in loads:
            out.add(i)
    return out


def _shake_once(source: str) -> str:
    tree = ast.parse(source)
    _unannotate_globals(tree)
    drop_unreachable(tree)
    source = ast.unparse(tree)
    tree = ast.parse(source)
    units, owner = _units(tree)
    table = symtable.symtable(source, "program", "exec")
    unread = _signature_annotations(tree)
    for node, _parent, chain in _walk_scoped([(n, tree) for n in tree.body], (table,)):
        u = units[owner[id(node)]]
        if id(node) in unread:
            continue
        if isinstance(node, ast.Name) and _binding_scope(node.id, chain) == 0:
            u.globals.add(node.id)
        elif isinstance(node, ast.Attribute):
            u.attrs.add(node.attr)
            u.dynamic |= node.attr in _INTROSPECTION
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            u.attrs.add(node.value)
        elif isinstance(node, ast.Call):
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
            if fname in _INTROSPECTION or (
                fname in _DYNAMIC_ATTR
                and len(node.args) > 1
                and isinstance(node.args[1], (ast.JoinedStr, ast.BinOp, ast.Call))
            ):
                u.dynamic = True
    for u in units:  # a definition's own name is not a use of it
        if u.kind == "global" and u.name:
            u.globals.discard(u.name)

    classes = {s.name: s for s in tree.body if isinstance(s, ast.ClassDef)}
    external = _external_names(tree, classes)
    protocol = protocol_names()
    class_of = {
        i: u.nodes[0].name for i, u in enumerate(units) if isinstance(u.nodes[0], ast.ClassDef)
    }

    keep = [False] * len(units)
    wanted: set[str] = set()
    attrs: set[str] = set()
    dynamic = False
    changed = True
    while changed:
        changed = False
        for i, u in enumerate(units):
            if keep[i] or (u.parent is not None and not keep[u.parent]):
                continue
            if u.name is None:
                reached = True
            elif u.kind == "global":
                reached = u.name in wanted
            else:
                ext = external.get(class_of[u.parent])
                reached = (
                    dynamic or ext is None or u.name in ext or u.name in protocol or u.name in attrs
                )
            if reached:
                keep[i] = changed = True
                wanted |= u.globals
                attrs |= u.attrs
                dynamic |= u.dynamic
    dropped = {id(n) for i, u in enumerate(units) if not keep[i] for n in u.nodes}

    class Drop(ast.NodeTransformer):
        def generic_visit(self, node):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(node, field, None)
                if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                    new = [s for s in block if id(s) not in dropped]
                    setattr(
                        node, field, new or ([] if isinstance(node, ast.Module) else [ast.Pass()])
                    )
            return super().generic_visit(node)

    tree = Drop().visit(tree)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)
