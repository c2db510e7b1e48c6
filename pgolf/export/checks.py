"""Config checks that cannot fail in the exported script, dropped from it.

Every config section validates its fields in ``__post_init__``. The exported script embeds
a config that was valid when it was exported (``bundle`` rebuilds it from its JSON, which
runs every check), so a check can only fail there if it reads a field that changes after
export: the environment's overrides (``entry.ENV_OVERRIDES``) and the fields the run itself
replaces (``bundle.RUN_REPLACED``: the tokenizer's ``vocab_size``/``bos_id``, the script's
own ``code_bytes``, GPTQ's unfused copy of the model). ``strip_checks`` removes the others.

Only statements that do nothing but check are removed, and only where every value they read
is known to be fixed:

- ``need(...)`` calls (the module's check helper) and ``if ...: raise ...`` with no else;
- ``for v in ("a", "b"): <checks>`` over literal field names (``getattr(self, v)``);
- ``x = <expression>`` inside such a block when only removed statements read ``x``.

A statement is fixed when its reads of ``self`` are fields that cannot change, properties
whose bodies read only such fields, or ``getattr(self, <literal or loop name>)``; when it
reads no parameter or local of the method other than those above; and when it calls
nothing but ``need``, a few builtins and methods of the values it reads. Anything else
(``self`` passed on, ``self.method()``, ``object.__setattr__``, ``try``) stays as it is.
Methods processed: ``__post_init__`` and the methods it calls as a statement (``self._check()``).
"""

from __future__ import annotations

import ast
import dataclasses

from pgolf.export import merge

CHECK = "need"
PURE_BUILTINS = frozenset(
    {"len", "all", "any", "bool", "isinstance", "min", "max", "abs", "sorted", "tuple", "set"}
)
UNKNOWN = None  # what ``_reads`` returns for an expression it cannot vouch for


@dataclasses.dataclass
class _Class:
    fields: set[str]  # the dataclass's fields
    fixed: set[str]  # those that cannot change after export
    props: dict[str, set[str] | None]  # property -> fields it reads (None: unknown)
    check: str | None  # the program's check helper (``need``), if it has one


def strip_checks(source: str, sections: dict[str, tuple[set[str], set[str]]]) -> str:
    """``source`` without the checks of ``sections`` (class name -> (fields, changeable))."""
    tree = ast.parse(source)
    # ``need`` counts as a check only where the program's ``need`` is one (it raises if not cond)
    check = CHECK if CHECK in {merge._checker(n) for n in tree.body} else None
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name not in sections:
            continue
        fields, changeable = sections[node.name]
        cls = _Class(fields, fields - changeable, {}, check)
        methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
        for name, m in methods.items():
            if any(ast.unparse(d) == "property" for d in m.decorator_list):
                cls.props[name] = UNKNOWN
        for name in list(cls.props):  # properties reading other properties: to a fixed point
            cls.props[name] = _function_reads(methods[name], cls)
        for name in list(cls.props):
            cls.props[name] = _function_reads(methods[name], cls)
        post = methods.get("__post_init__")
        if post is None:
            continue
        todo = [post]
        for stmt in post.body:
            call = stmt.value if isinstance(stmt, ast.Expr) else None
            if (
                isinstance(call, ast.Call)
                and not call.args
                and not call.keywords
                and isinstance(call.func, ast.Attribute)
                and _is_self(call.func.value)
                and call.func.attr in methods
                and call.func.attr not in cls.props
            ):
                todo.append(methods[call.func.attr])
        for fn in todo:
            _strip_function(fn, cls)
        if all(isinstance(s, ast.Pass) for s in post.body):  # no check left: no hook either
            node.body.remove(post)
            node.body = node.body or [ast.Pass()]
    return ast.unparse(tree)


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _locals(fn: ast.FunctionDef) -> set[str]:
    """Parameters and names the function binds (comprehension variables are their own)."""
    a = fn.args
    names = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
    names |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    comp = {
        id(n) for c in ast.walk(fn) if isinstance(c, ast.comprehension) for n in ast.walk(c.target)
    }
    for n in ast.walk(fn):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and id(n) not in comp:
            names.add(n.id)
    return names


def _function_reads(fn: ast.FunctionDef, cls: _Class) -> set[str] | None:
    """Fields a property reads, if its body only reads fields, globals and its own names."""
    body = fn.body[1:] if ast.get_docstring(fn) is not None else fn.body
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return UNKNOWN
    return _reads(body[0].value, cls, _Env({}, {}, _locals(fn) - {"self"}))


@dataclasses.dataclass
class _Env:
    fixed: dict[str, set[str] | None]  # names of the method -> fields their value read
    keys: dict[str, set[str]]  # loop names over literal field names -> those names
    local: set[str]  # every name of the method: unknown unless in ``fixed``/``keys``


def _reads(node: ast.AST, cls: _Class, env: _Env) -> set[str] | None:
    """Fields ``node`` reads, or None when it reads or does anything else we cannot vouch for."""
    bound = {  # names bound inside the expression: comprehension variables
        n.id
        for c in ast.walk(node)
        if isinstance(c, ast.comprehension)
        for n in ast.walk(c.target)
        if isinstance(n, ast.Name)
    }
    parents = {id(c): p for p in ast.walk(node) for c in ast.iter_child_nodes(p)}
    out: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            if isinstance(f, ast.Name) and f.id == "getattr":
                if len(n.args) != 2 or n.keywords or not _is_self(n.args[0]):
                    return UNKNOWN
                key = n.args[1]
                if isinstance(key, ast.Constant) and key.value in cls.fields:
                    out.add(key.value)
                elif isinstance(key, ast.Name) and key.id in env.keys:
                    out |= env.keys[key.id]
                else:
                    return UNKNOWN
            elif isinstance(f, ast.Name):
                if f.id not in PURE_BUILTINS and f.id != cls.check:
                    return UNKNOWN
            elif not isinstance(f, ast.Attribute) or _is_self(f.value):
                return UNKNOWN  # self.method(...), or a call of a call's result
            else:
                root = f.value
                while isinstance(root, (ast.Attribute, ast.Subscript)):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in env.local and root.id not in bound:
                    return UNKNOWN  # a method of a value the method holds: it may change it
        elif _is_self(n):
            p = parents.get(id(n))
            if isinstance(p, ast.Attribute) and p.value is n:
                if p.attr in cls.fields:
                    out.add(p.attr)
                elif cls.props.get(p.attr) is not None:
                    out |= cls.props[p.attr]
                else:
                    return UNKNOWN
            elif not (
                isinstance(p, ast.Call)
                and isinstance(p.func, ast.Name)
                and p.func.id == "getattr"
                and p.args[0] is n
            ):
                return UNKNOWN  # self passed on
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            if n.id in env.keys:
                out |= env.keys[n.id]
            elif n.id in env.fixed:
                if env.fixed[n.id] is None:
                    return UNKNOWN
                out |= env.fixed[n.id]
            elif n.id in env.local and n.id not in bound:
                return UNKNOWN
        elif isinstance(n, (ast.NamedExpr, ast.Lambda, ast.Await, ast.Yield, ast.YieldFrom)):
            return UNKNOWN
    return out


def _check_reads(stmt: ast.stmt, cls: _Class, env: _Env) -> set[str] | None:
    """What a check statement reads; None if it is no check or reads what we cannot vouch for."""
    if isinstance(stmt, ast.Expr):
        c = stmt.value
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == cls.check:
            return _reads(c, cls, env)
        return UNKNOWN
    if not isinstance(stmt, ast.If) or stmt.orelse:
        return UNKNOWN
    for r in stmt.body:
        ok = isinstance(r, ast.Raise) and (r.cause is None or _is_none(r.cause))
        exc = r.exc if isinstance(r, ast.Raise) else None
        if not ok or not (
            isinstance(exc, ast.Call)
            and isinstance(exc.func, ast.Name)
            and not exc.keywords
            and all(isinstance(a, ast.Constant) for a in exc.args)
        ):
            return UNKNOWN
    return _reads(stmt.test, cls, env)


def _is_none(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _fixed(reads: set[str] | None, cls: _Class) -> bool:
    return reads is not None and reads <= cls.fixed


def _strip_function(fn: ast.FunctionDef, cls: _Class) -> None:
    env = _Env({}, {}, _locals(fn) - {"self"})
    candidates: list[ast.Assign] = []
    fn.body = _strip_block(fn.body, cls, env, candidates)
    # fixed assignments go when nothing left reads their name (chains included)
    gone: set[int] = set()
    while True:
        loads = {
            n.id
            for n in _walk_kept(fn.body, gone)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
        }
        more = {id(a) for a in candidates if id(a) not in gone and a.targets[0].id not in loads}
        if not more:
            break
        gone |= more
    fn.body = _prune(fn.body, gone, fn) or [ast.Pass()]


def _walk_kept(body: list[ast.stmt], gone: set[int]):
    todo = [s for s in body if id(s) not in gone]
    while todo:
        node = todo.pop()
        yield node
        for c in ast.iter_child_nodes(node):
            if id(c) not in gone:
                todo.append(c)


def _prune(body: list[ast.stmt], gone: set[int], fn: ast.FunctionDef) -> list[ast.stmt]:
    out = []
    for stmt in body:
        if id(stmt) in gone:
            continue
        if isinstance(stmt, ast.For) and getattr(stmt, "_literal_loop", False):
            stmt.body = _prune(stmt.body, gone, fn)
            if not stmt.body:
                # the loop goes if nothing outside a loop over the same name reads its name
                name = stmt.target.id
                inside = {
                    id(n)
                    for f in ast.walk(fn)
                    if isinstance(f, ast.For)
                    and isinstance(f.target, ast.Name)
                    and f.target.id == name
                    for n in ast.walk(f)
                }
                if not any(
                    isinstance(n, ast.Name) and n.id == name and id(n) not in inside
                    for n in ast.walk(fn)
                ):
                    continue
                stmt.body = [ast.Pass()]
        out.append(stmt)
    return out


def _strip_block(body, cls, env, candidates) -> list[ast.stmt]:
    """The block without its fixed checks; fixed assignments are noted in ``candidates``."""
    out: list[ast.stmt] = []
    for stmt in body:
        if _fixed(_check_reads(stmt, cls, env), cls):
            continue
        if (
            isinstance(stmt, ast.For)
            and not stmt.orelse
            and isinstance(stmt.target, ast.Name)
            and isinstance(stmt.iter, (ast.Tuple, ast.List))
            and stmt.iter.elts
            and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in stmt.iter.elts
            )
        ):
            names = {e.value for e in stmt.iter.elts}
            var = stmt.target.id
            assigned = _stores(stmt)
            inner = _Env(
                {k: v for k, v in env.fixed.items() if k not in assigned},
                {k: v for k, v in env.keys.items() if k not in assigned},
                env.local,
            )
            if names <= cls.fields:
                inner.keys[var] = names
            # (names read before the body assigns them would be the last pass's: unknown)
            stmt.body = _strip_block(stmt.body, cls, inner, candidates)
            stmt._literal_loop = True
            for name in assigned:
                env.fixed[name] = UNKNOWN  # bound or not after the loop: unknown
                env.keys.pop(name, None)
            out.append(stmt)
            continue
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            reads = _reads(stmt.value, cls, env)
            name = stmt.targets[0].id
            env.keys.pop(name, None)
            env.fixed[name] = reads if _fixed(reads, cls) else UNKNOWN
            if _fixed(reads, cls):
                candidates.append(stmt)
            out.append(stmt)
            continue
        for n in ast.walk(stmt):  # what kept code binds or touches is no longer vouched for
            if isinstance(n, ast.Name) and (n.id in env.fixed or isinstance(n.ctx, ast.Store)):
                env.fixed[n.id] = UNKNOWN
                env.keys.pop(n.id, None)
        out.append(stmt)
    return out


def _stores(stmt: ast.stmt) -> set[str]:
    return {
        n.id for n in ast.walk(stmt) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
    }
