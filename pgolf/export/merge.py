"""pgolf's run-path modules as one module, so the minifier can rename names across all of them.

Each module keeps its code; what changes is how names reach each other:

* ``from pgolf.x import y [as z]`` and ``import pgolf.x [as m]`` (module level or inside
  functions) are removed; every reference to ``z`` becomes the one global name of the
  definition it stands for, and ``m.attr`` (``pgolf.x.attr``) becomes that attribute's
  global name. Re-exports (``pgolf.model`` re-exporting ``GPT``) resolve to the definition.
* A module-level name keeps its spelling unless another module binds the same spelling to
  something else (or uses it as a builtin); then it gets a unique suffix in its module.
* Imports of other packages stay where they are; a repeat of one an earlier module already
  made at module level is dropped.
* A pgolf module that is not carried (an optional one the config does not use) is imported
  as ``raise ModuleNotFoundError(...)``: what the import would do with no pgolf installed.

Scopes come from :mod:`symtable`, so a local that shadows a module name is left alone. What
the merge cannot express (a pgolf module used as a value, a star or relative import, a
module-level import cycle, a rename that a local would shadow) raises :class:`MergeError`.
"""

from __future__ import annotations

import ast
import symtable
from collections import Counter
from collections.abc import Callable, Iterator

FUTURE = "from __future__ import annotations"
_SCOPE_NAMES = {
    ast.Lambda: "lambda",
    ast.ListComp: "listcomp",
    ast.SetComp: "setcomp",
    ast.DictComp: "dictcomp",
    ast.GeneratorExp: "genexpr",
}
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, *_SCOPE_NAMES)
_INLINABLE = (ast.ListComp, ast.SetComp, ast.DictComp)


class MergeError(Exception):
    """The modules cannot be merged into one namespace without changing what they do."""


def _is_pgolf(name: str) -> bool:
    return name == "pgolf" or name.startswith("pgolf.")


def _enclosing_parts(node: ast.AST) -> list[ast.AST]:
    """The parts of a scope-making node that its enclosing scope evaluates."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = node.args
        parts = [*a.defaults, *(d for d in a.kw_defaults if d is not None)]
        if not isinstance(node, ast.Lambda):
            parts += node.decorator_list
            parts += [
                x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs) if x.annotation
            ]
            parts += [x.annotation for x in (a.vararg, a.kwarg) if x is not None and x.annotation]
            parts += [node.returns] if node.returns else []
        return parts
    if isinstance(node, ast.ClassDef):
        return [*node.decorator_list, *node.bases, *node.keywords]
    return [node.generators[0].iter]  # comprehensions


def _inner_parts(node: ast.AST) -> list[ast.AST]:
    """The parts of a scope-making node that run in its own scope."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return list(node.body)
    if isinstance(node, ast.Lambda):
        return [node.body]
    out: list[ast.AST] = []
    if isinstance(node, ast.DictComp):
        out += [node.key, node.value]
    else:
        out.append(node.elt)
    for i, g in enumerate(node.generators):
        out += [g.target, *g.ifs] + ([g.iter] if i else [])
    return out


def _walk_scoped(
    roots: list[tuple[ast.AST, ast.AST]], chain: tuple[symtable.SymbolTable, ...]
) -> Iterator[tuple[ast.AST, ast.AST, tuple[symtable.SymbolTable, ...]]]:
    """Every node under ``roots`` (evaluated in ``chain[-1]``) with its parent and scope chain."""
    pending = list(roots)
    scoped: list[ast.AST] = []
    # Python >= 3.12 inlines list/set/dict comprehensions (PEP 709): such a comprehension has
    # no table of its own and its names live in the enclosing table, so it is walked as part
    # of the enclosing scope. A comprehension is a scope of its own only where a table says so.
    tables_left = Counter((t.get_name(), t.get_lineno()) for t in chain[-1].get_children())
    while pending:
        node, parent = pending.pop()
        yield node, parent, chain
        if isinstance(node, _INLINABLE):
            key = (_SCOPE_NAMES[type(node)], node.lineno)
            if not tables_left[key]:
                pending += [(c, node) for c in ast.iter_child_nodes(node)]
                continue
            tables_left[key] -= 1
        if isinstance(node, _SCOPES):
            scoped.append(node)
            pending += [(p, node) for p in _enclosing_parts(node)]
        else:
            pending += [(c, node) for c in ast.iter_child_nodes(node)]
    tables = sorted(chain[-1].get_children(), key=lambda t: t.get_lineno())
    order = sorted(scoped, key=lambda n: (n.lineno, n.col_offset))
    if len(order) != len(tables):
        raise MergeError(f"scope count mismatch in {chain[-1].get_name()}")
    for sub, table in zip(order, tables, strict=True):
        want = getattr(sub, "name", None) or _SCOPE_NAMES[type(sub)]
        if table.get_name() != want or table.get_lineno() != sub.lineno:
            raise MergeError(f"scope mismatch: {want} at {sub.lineno} vs {table.get_name()}")
        yield from _walk_scoped([(p, sub) for p in _inner_parts(sub)], (*chain, table))


def _binding_scope(name: str, chain: tuple[symtable.SymbolTable, ...]) -> int:
    """Index in ``chain`` of the scope whose binding ``name`` reads there (0: the module)."""
    if len(chain) == 1:
        return 0
    try:
        sym = chain[-1].lookup(name)
    except KeyError:  # annotations under ``from __future__ import annotations``: module names
        return 0
    if sym.is_global() or sym.is_declared_global():
        return 0
    if sym.is_local() and not sym.is_free():
        return len(chain) - 1
    for i in range(len(chain) - 2, 0, -1):
        t = chain[i]
        if t.get_type() == "class":
            continue
        try:
            s = t.lookup(name)
        except KeyError:
            continue
        if s.is_local() and not s.is_free() and not s.is_global():
            return i
    return 0


class _Module:
    def __init__(self, name: str, source: str, is_package: bool):
        self.name = name
        self.package = name if is_package else name.rpartition(".")[0]
        self.tree = ast.parse(source)
        self.top = symtable.symtable(source, name, "exec")
        self.nodes = list(_walk_scoped([(n, self.tree) for n in self.tree.body], (self.top,)))
        self.parents = {id(n): p for n, p, _ in self.nodes}
        self.tables = list({id(c[-1]): c[-1] for _, _, c in self.nodes if len(c) > 1}.values())
        # (scope table id, local name) -> ("mod", module) | ("name", module, name) | ("missing", m)
        self.pgolf_imports: dict[tuple[int, str], tuple] = {}
        self.defs: set[str] = set()  # module-level names this module defines
        self.ext: dict[str, str] = {}  # module-level name -> import spec (other packages)
        self.free_globals: set[str] = set()  # global reads this module does not define


def _import_specs(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str, str]]:
    """(bound name, imported module, attribute or '') for each alias."""
    if isinstance(node, ast.ImportFrom):
        if node.level:
            raise MergeError(f"relative import: {ast.unparse(node)}")
        out = []
        for a in node.names:
            if a.name == "*":
                raise MergeError(f"star import: {ast.unparse(node)}")
            out.append((a.asname or a.name, node.module, a.name))
        return out
    return [
        (a.asname or a.name.split(".")[0], a.name if a.asname else a.name.split(".")[0], "")
        for a in node.names
    ]


def merge(
    modules: dict[str, str],
    packages: set[str],
    footer: Callable[[Callable[[str, str], str]], str],
    is_module: Callable[[str], bool],
    entry: str,
) -> str:
    """One module's source for ``modules`` ({name: source}).

    ``packages``: the names among them that are packages; ``is_module(name)``: whether pgolf has
    a module ``name`` (carried or not); ``footer(global_name)`` returns the code that ends the
    program, given ``global_name(module, name)``: the merged name of ``module.name``.

    Modules that ``entry`` reaches through module-level imports run first, in dependency
    order; the others (imported only inside functions) run when first imported, as in
    Python: their code becomes a loader function that binds their names as globals, and
    each import of them becomes a call of it.
    """
    forbidden: dict[tuple, set[str]] = {}
    for _ in range(8):
        shadows: list[tuple[tuple, str]] = []
        text = _merge_once(modules, packages, footer, is_module, entry, forbidden, shadows)
        if not shadows:
            return text
        for key, name in shadows:
            forbidden.setdefault(key, set()).add(name)
    raise MergeError(f"could not find unshadowed global names: {shadows[:5]}")


def _merge_once(modules, packages, footer, is_module, entry, forbidden, shadows) -> str:
    mods = {n: _Module(n, s, n in packages) for n, s in modules.items()}

    _missing: set[str] = set()
    # pass 1: bindings
    for m in mods.values():
        for node, _parent, chain in m.nodes:
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            scope = chain[-1]
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                continue  # the program starts with FUTURE
            for bound, mod, attr in _import_specs(node):
                if not _is_pgolf(mod):
                    if len(chain) == 1:
                        spec = f"{mod}:{attr}"
                        if m.ext.get(bound, spec) != spec:
                            m.defs.add(bound)
                        m.ext[bound] = spec
                    continue
                if isinstance(node, ast.Import) and not node.names[0].asname:
                    target = ("mod", "pgolf")
                elif attr:
                    full = f"{mod}.{attr}"
                    if full in modules:
                        target = ("mod", full)
                    elif is_module(full) or mod not in modules:
                        target = ("missing", full if is_module(full) else mod)
                    else:
                        target = ("name", mod, attr)
                else:
                    target = ("mod", mod) if mod in modules else ("missing", mod)
                if target[0] == "missing":
                    _missing.add(target[1])
                m.pgolf_imports[(id(scope), bound)] = target
        for sym in m.top.get_symbols():
            n = sym.get_name()
            if (id(m.top), n) in m.pgolf_imports:
                continue
            if sym.is_assigned() or sym.is_imported() or sym.is_namespace():
                if n in m.ext and not (sym.is_assigned() or sym.is_namespace()):
                    continue
                m.defs.add(n)
                m.ext.pop(n, None)
        for table in m.tables:
            for sym in table.get_symbols():
                if sym.is_declared_global() and sym.is_assigned():
                    m.defs.add(sym.get_name())

    def resolve(target: tuple, seen: frozenset = frozenset()) -> tuple:
        """An import target as ("def", module, name), ("ext", spec), ("mod", m) or missing."""
        if target[0] != "name":
            return target
        _, mod, attr = target
        if (mod, attr) in seen:
            raise MergeError(f"import cycle resolving {mod}.{attr}")
        m = mods[mod]
        if attr in m.defs:
            return ("def", mod, attr)
        if attr in m.ext:
            return ("ext", m.ext[attr])
        if (id(m.top), attr) in m.pgolf_imports:
            return resolve(m.pgolf_imports[(id(m.top), attr)], seen | {(mod, attr)})
        raise MergeError(f"{mod} has no name {attr!r}")

    # global names: definitions first in module order, then other packages' imports
    reserved: set[str] = set()
    for m in mods.values():
        own = m.defs | set(m.ext) | {n for (t, n) in m.pgolf_imports if t == id(m.top)}
        for table in (m.top, *m.tables):
            for sym in table.get_symbols():
                n = sym.get_name()
                if (sym.is_global() or table is m.top) and sym.is_referenced() and n not in own:
                    m.free_globals.add(n)
        reserved |= m.free_globals
    global_name: dict[tuple, str] = {}
    used = set(reserved)
    for m in mods.values():
        for n in sorted(m.ext):
            key = ("ext", m.ext[n])
            if key not in global_name and n not in used and n not in forbidden.get(key, ()):
                global_name[key] = n
                used.add(n)
    for m in mods.values():
        for n in sorted(m.ext):
            key = ("ext", m.ext[n])
            if key not in global_name:
                global_name[key] = _fresh(n, used | forbidden.get(key, set()))
                used.add(global_name[key])
    for m in mods.values():
        for n in sorted(m.defs):
            key = ("def", m.name, n)
            global_name[key] = _fresh(n, used | forbidden.get(key, set()))
            used.add(global_name[key])

    def gname(key: tuple) -> str:
        return global_name[key]

    def local_key(m: _Module, n: str) -> tuple | None:
        if n in m.defs:
            return ("def", m.name, n)
        if n in m.ext:
            return ("ext", m.ext[n])
        return None

    def local_name(m: _Module, n: str) -> str:
        key = local_key(m, n)
        return n if key is None else gname(key)

    # pass 2: rewrite
    eager = _eager(mods, resolve, entry)
    loaders = {n: _fresh(f"load_{n.replace('.', '_')}", used) for n in mods if n not in eager}
    # rewritten in the order they run: a repeated import is dropped after the first one runs
    order = [n for n in _order(mods) if n in eager] + sorted(loaders)
    done_ext: set[tuple[str, str]] = set()
    for name in order:
        _rewrite(
            mods[name], mods, resolve, gname, local_key, local_name, done_ext, shadows, loaders
        )

    parts = [FUTURE]
    for name in order:
        tree = mods[name].tree
        _keep_signature_annotations(tree)
        if name in loaders:
            tree = _loader(loaders[name], tree)
        parts.append(ast.unparse(tree))
    parts.append(footer(lambda mod, n: local_name(mods[mod], n)))
    return "\n".join(p for p in parts if p.strip()) + "\n"


def _fresh(n: str, used: set[str]) -> str:
    name, i = n, 0
    while name in used:
        i += 1
        name = f"{n}_{i}"
    used.add(name)
    return name


def _rewrite(
    m: _Module, mods, resolve, gname, local_key, local_name, done_ext, shadows, loaders
) -> None:
    replace: dict[int, ast.AST] = {}  # id(node) -> replacement
    drop: set[int] = set()

    def target_of(n: str, chain) -> tuple | None:
        i = _binding_scope(n, chain)
        return m.pgolf_imports.get((id(chain[i]), n)), i

    def check_unshadowed(key: tuple, chain, upto: int) -> None:
        g = gname(key)
        for j, t in enumerate(chain[upto + 1 :], upto + 1):
            if t.get_type() == "class" and j != len(chain) - 1:
                continue  # a class body's names are not visible to its methods
            try:
                s = t.lookup(g)
            except KeyError:
                continue
            if (id(t), g) in m.pgolf_imports:
                continue  # the pgolf import being removed
            if s.is_local() or s.is_parameter() or s.is_free():
                shadows.append((key, g))  # named again with this name forbidden

    def member(target: tuple, attrs: list[str]) -> tuple[tuple, int]:
        """Follow ``module.a.b``: the target reached and how many attributes it used."""
        used = 0
        while target[0] == "mod" and used < len(attrs):
            mod, attr = target[1], attrs[used]
            full = f"{mod}.{attr}"
            target = ("mod", full) if full in mods else resolve(("name", mod, attr))
            used += 1
        return target, used

    for node, parent, chain in m.nodes:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            if ast.unparse(node) != FUTURE:
                raise MergeError(f"{m.name}: {ast.unparse(node)}")
            drop.add(id(node))
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            specs = _import_specs(node)
            keep = []
            missing = None
            loads: list[str] = []
            for alias, (bound, mod, _attr) in zip(node.names, specs, strict=True):
                if _is_pgolf(mod):
                    tgt = m.pgolf_imports[(id(chain[-1]), bound)]
                    if tgt[0] == "missing":
                        missing = tgt[1]
                    else:
                        loads += [x for x in _modules_run(tgt, resolve) if x in loaders]
                    continue
                if len(chain) == 1:
                    g = local_name(m, bound)
                    if g != bound:
                        if isinstance(node, ast.Import) and not alias.asname and "." in alias.name:
                            raise MergeError(f"{m.name}: cannot rename {ast.unparse(node)}")
                        alias.asname = g
                    key = (m.ext.get(bound, ""), g)
                    if bound in m.ext and isinstance(parent, ast.Module) and m.name not in loaders:
                        if key in done_ext:
                            continue
                        done_ext.add(key)
                keep.append(alias)
            if missing is not None:
                replace[id(node)] = ast.parse(
                    f"raise ModuleNotFoundError(\"No module named '{missing}'\")"
                ).body[0]
            else:
                calls = [
                    ast.Expr(ast.Call(ast.Name(loaders[x], ast.Load()), [], []))
                    for x in dict.fromkeys(loads)
                ]
                if keep:
                    node.names = keep
                    calls.append(node)
                if not calls:
                    drop.add(id(node))
                elif calls != [node]:
                    replace[id(node)] = calls
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if len(chain) == 1:
                node.name = local_name(m, node.name)
            continue
        if isinstance(node, ast.ExceptHandler) and node.name and len(chain) == 1:
            node.name = local_name(m, node.name)
            continue
        if isinstance(node, ast.Global):
            node.names = [local_name(m, n) for n in node.names]
            continue
        if not isinstance(node, ast.Name):
            continue
        tgt, i = target_of(node.id, chain)
        if tgt is None:
            if i == 0:
                key = local_key(m, node.id)
                if key is not None and gname(key) != node.id:
                    check_unshadowed(key, chain, 0)
                    node.id = gname(key)
            continue
        if not isinstance(node.ctx, ast.Load):
            raise MergeError(f"{m.name}: assigns to imported pgolf name {node.id!r}")
        tgt = resolve(tgt)
        if tgt[0] == "missing":
            continue  # only after the raise that replaced its import
        outer, attrs = node, []
        while True:
            up = m.parents.get(id(outer))
            if isinstance(up, ast.Attribute) and up.value is outer:
                attrs.append(up.attr)
                outer = up
            else:
                break
        final, used = member(tgt, attrs)
        if final[0] == "mod":
            call = m.parents.get(id(node))
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "getattr"
                and call.args[0] is node
                and len(call.args) == 3
                and isinstance(call.args[1], ast.Constant)
            ):
                try:
                    final = resolve(("name", final[1], call.args[1].value))
                    g = gname(final)
                    check_unshadowed(final, chain, 0)
                    replace[id(call)] = ast.Name(g, ast.Load())
                except MergeError:
                    replace[id(call)] = call.args[2]
                continue
            raise MergeError(f"{m.name}: pgolf module {final[1]} used as a value")
        g = gname(final)
        check_unshadowed(final, chain, 0)
        top = node
        for _ in range(used):
            top = m.parents[id(top)]
        replace[id(top)] = ast.Name(g, ast.Load())

    _apply(m.tree, replace, drop)


def _apply(tree: ast.AST, replace: dict[int, ast.AST], drop: set[int]) -> None:
    class T(ast.NodeTransformer):
        def visit(self, node):
            if id(node) in drop:
                return None
            if id(node) in replace:
                return replace[id(node)]
            node = self.generic_visit(node)
            if not isinstance(node, ast.Module) and getattr(node, "body", None) == []:
                node.body = [ast.Pass()]
            return node

    T().visit(tree)
    ast.fix_missing_locations(tree)


def _order(mods: dict[str, _Module]) -> list[str]:
    """Modules in an order where module-level code finds what it uses already defined."""
    deps: dict[str, set[str]] = {}
    for m in mods.values():
        d = set()
        for (scope, _n), tgt in m.pgolf_imports.items():
            if scope != id(m.top) or tgt[0] == "missing":
                continue
            d.add(tgt[1])
            parts = tgt[1].split(".")
            d.update(".".join(parts[:i]) for i in range(1, len(parts)))
        parts = m.name.split(".")
        d.update(".".join(parts[:i]) for i in range(1, len(parts)))
        deps[m.name] = {x for x in d if x in mods and x != m.name}
    # a package's __init__ re-exporting its submodules runs after them (it needs their
    # definitions); its submodules run "inside" it in Python, which only matters for
    # module-level side effects, which these modules do not have.
    for name in mods:
        for dep in list(deps[name]):
            if name.startswith(dep + ".") and name in deps[dep] | _closure(deps, dep):
                deps[name].discard(dep)
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise MergeError(f"module-level import cycle: {' -> '.join((*path, n))}")
        state[n] = 1
        for d in sorted(deps[n]):
            visit(d, (*path, n))
        state[n] = 2
        out.append(n)

    for n in sorted(mods):
        visit(n, ())
    return out


def _closure(deps: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for d in deps[todo.pop()]:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def module_bindings(source: str) -> set[str]:
    """The module-level names ``source`` binds (including through ``global``)."""
    out: set[str] = set()
    pending = list(ast.parse(source).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
            out.update(n for x in ast.walk(node) if isinstance(x, ast.Global) for n in x.names)
            continue
        if isinstance(node, (ast.Lambda, *_SCOPE_NAMES)):
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            out.add(node.id)
        elif isinstance(node, ast.alias):
            out.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
        pending.extend(ast.iter_child_nodes(node))
    return out


def _modules_run(target: tuple, resolve) -> list[str]:
    """The pgolf modules an import of ``target`` runs (parents first)."""
    names = []
    if target[0] == "mod":
        names.append(target[1])
    elif target[0] == "name":
        names.append(target[1])
        final = resolve(target)
        if final[0] == "def":
            names.append(final[1])
    out: list[str] = []
    for n in names:
        parts = n.split(".")
        out += [".".join(parts[: i + 1]) for i in range(len(parts))]
    return list(dict.fromkeys(out))


def _eager(mods: dict[str, _Module], resolve, entry: str) -> set[str]:
    """The modules running an import of ``entry`` runs (module-level imports, transitively)."""
    seen: set[str] = set()
    todo = _modules_run(("mod", entry), resolve)
    while todo:
        n = todo.pop()
        if n in seen or n not in mods:
            continue
        seen.add(n)
        m = mods[n]
        for (scope, _b), tgt in m.pgolf_imports.items():
            if scope == id(m.top) and tgt[0] != "missing":
                todo += _modules_run(tgt, resolve)
    return seen


def _loader(name: str, tree: ast.Module) -> ast.Module:
    """``tree``'s code as ``def name()``, binding its module-level names as globals.

    The first call runs it; the last statement rebinds ``name`` to ``int``, so later calls
    do nothing (a call that raised runs again next time, like a failed import).
    """
    bound = sorted(module_bindings(ast.unparse(tree)) | {name})
    body = [ast.Global(bound), *tree.body, ast.parse(f"{name} = int").body[0]]
    fn = ast.FunctionDef(name, ast.arguments([], [], None, [], [], None, []), body, [], None)
    out = ast.Module([fn], [])
    ast.fix_missing_locations(out)
    return out


# Decorators that read the annotations of the function they get (the minifier drops them).
_ANNOTATION_READERS = ("torch.library.custom_op",)


def _keep_signature_annotations(tree: ast.Module) -> None:
    """Functions decorated by an annotation reader get their annotations set explicitly.

    ``@d def f(q: T) -> R`` becomes ``def f(q)``, ``f.__annotations__ = {'q': T, 'return': R}``,
    ``f = d(f)``: the annotations survive the minifier (which renames T and R consistently).
    """

    def visit(body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for node in body:
            for field in ("body", "orelse", "finalbody"):
                if isinstance(getattr(node, field, None), list) and not isinstance(
                    node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
                ):
                    setattr(node, field, visit(getattr(node, field)))
            decos = getattr(node, "decorator_list", None)
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not any(
                ast.unparse(d.func if isinstance(d, ast.Call) else d) in _ANNOTATION_READERS
                for d in decos
            ):
                out.append(node)
                continue
            a = node.args
            keys, values = [], []
            for x in (*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg):
                if x is not None and x.annotation is not None:
                    keys.append(ast.Constant(x.arg))
                    values.append(x.annotation)
                    x.annotation = None
            if node.returns is not None:
                keys.append(ast.Constant("return"))
                values.append(node.returns)
                node.returns = None
            node.decorator_list = []
            wrapped: ast.expr = ast.Name(node.name, ast.Load())
            for d in reversed(decos):
                wrapped = ast.Call(d, [wrapped], [])
            out += [
                node,
                ast.Assign(
                    [
                        ast.Attribute(
                            ast.Name(node.name, ast.Load()), "__annotations__", ast.Store()
                        )
                    ],
                    ast.Dict(keys, values),
                ),
                ast.Assign([ast.Name(node.name, ast.Store())], wrapped),
            ]
        return out

    tree.body = visit(tree.body)
    ast.fix_missing_locations(tree)


def _is_text(node: ast.expr) -> bool:
    """A message: a str literal, an f-string, or a ``+`` / ``%`` / ``.format`` of them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _is_text(node.left)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and _is_text(node.func.value)
    )


def _checker(node: ast.stmt) -> str | None:
    """The name of a module-level ``def f(cond, msg): if not cond: raise E(msg)``, else None."""
    if not isinstance(node, ast.FunctionDef) or node.decorator_list:
        return None
    a = node.args
    if a.posonlyargs or a.vararg or a.kwonlyargs or a.kwarg or a.defaults or len(a.args) != 2:
        return None
    cond, msg = (x.arg for x in a.args)
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    want = f"if not {cond}:\n    raise {{}}({msg})"
    if len(body) != 1 or not isinstance(body[0], ast.If) or body[0].orelse:
        return None
    raise_ = body[0].body[0] if len(body[0].body) == 1 else None
    if not isinstance(raise_, ast.Raise) or not isinstance(raise_.exc, ast.Call):
        return None
    if ast.unparse(body[0]) != want.format(ast.unparse(raise_.exc.func)):
        return None
    return node.name


def drop_messages(source: str, keep: tuple[str, ...] = ()) -> str:
    """``source`` with the text of the exceptions it raises replaced by ``''``.

    ``raise K(...)`` for a class named in ``keep`` keeps its text (the errors bad inputs
    cause at run time; config checks cannot fire once the exported config was validated).

    The checks stay; only their messages go: the first argument of ``raise E(...)`` and of
    calls of a check helper (``def need(cond, msg): if not cond: raise E(msg)``) and an
    assert's message, where that is text (a literal, an f-string, or text ``+``/``%``/
    ``.format`` something). A message built otherwise (``str(e)``) is kept, and so is the
    ``ModuleNotFoundError`` of a module not carried. Whatever only the messages used (a
    did-you-mean helper) is then left for ``shake`` to drop.
    """
    tree = ast.parse(source)
    checkers = {n for n in map(_checker, tree.body) if n}
    for node in ast.walk(tree):
        call = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in checkers and len(node.args) == 2 and _is_text(node.args[1]):
                node.args[1] = ast.Constant("")
        elif isinstance(node, ast.Assert) and node.msg is not None and _is_text(node.msg):
            node.msg = None
        # an import of a module not carried keeps "No module named ...", as without pgolf
        if (
            call is not None
            and ast.unparse(call.func) not in ("ModuleNotFoundError", *keep)
            and call.args
            and _is_text(call.args[0])
        ):
            call.args[0] = ast.Constant("")
    return ast.unparse(tree)
