"""Per-layer parameter lists: where they are built, where they flow, how they are used.

``for W, b in params: x = f(x, W, b)`` iterates a Python list of per-layer
pytrees.  Scanning it needs one pytree of arrays with a leading layer axis.
Stacking inside the function works but costs O(L) work on every call (and
more under ``jax.grad``), so the default is to change the *layout*: the
function of this module that builds the list returns it stacked once, and
every loop over it becomes a scan.  That is only sound when every use of the
structure in the module is known, so this pass

1. finds the *builders*: module-level functions returning a list built by a
   comprehension or an ``append`` loop, whose elements cannot differ in shape
   from layer to layer (the loop variable is a PRNG key, or an index used only
   to pick keys);
2. follows the list from each ``v = builder(...)`` through assignments, calls
   of module functions (also through ``jax.jit``/``jax.grad``/``partial``),
   ``jax.grad`` results and element-wise ``jax.tree.map`` updates;
3. classifies every use: loops over it (rewritten together), ``len(v)``,
   ``v[i]``, ``v[a:b]`` (rewritten with ``jax.tree`` operations), passing it on
   (followed), returning it (the module's API now returns the stacked layout);
   any other use makes the layout change unsafe and is reported by name.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from .activity import arg_names, int_literal, walk_body, walk_scope
from .decline import Decline, short
from .imports import is_under

TRANSFORMS = {"jax.jit", "jax.grad", "jax.value_and_grad", "jax.checkpoint", "jax.remat", "functools.partial",
              "jax.named_call"}
ELEMENTWISE = {
    "jax.numpy.sqrt", "jax.numpy.square", "jax.numpy.abs", "jax.numpy.exp", "jax.numpy.log", "jax.numpy.sign",
    "jax.numpy.clip", "jax.numpy.where", "jax.numpy.maximum", "jax.numpy.minimum", "jax.numpy.zeros_like",
    "jax.numpy.ones_like", "jax.numpy.tanh", "jax.lax.stop_gradient", "jax.numpy.asarray",
}


@dataclass
class Builder:
    func: ast.FunctionDef
    returns: list[ast.Return]
    elem: ast.AST
    list_name: Optional[str] = None
    problem: Optional[Decline] = None

    @property
    def name(self) -> str:
        return self.func.name


@dataclass
class LayoutUse:
    """A use of the structure rewritten for the stacked layout."""

    kind: str  # "builder-return" | "len" | "index" | "slice"
    node: ast.AST  # the expression replaced
    arg: Optional[ast.AST] = None  # the structure expression inside it
    text: str = ""  # index or slice text


@dataclass
class Structure:
    builder: Builder
    names: set[tuple[int, str]] = field(default_factory=set)  # (id(scope), name)
    loops: list[ast.AST] = field(default_factory=list)
    uses: list[LayoutUse] = field(default_factory=list)
    returned_from: list[str] = field(default_factory=list)
    return_position: dict = field(default_factory=dict)  # function name -> None (whole result) or tuple index
    problem: Optional[Decline] = None


class _Scope:
    """A module-level function, or the module body itself."""

    def __init__(self, node: ast.AST, mctx) -> None:
        self.node = node
        self.mctx = mctx
        self.is_module = isinstance(node, ast.Module)
        self.params = [] if self.is_module else arg_names(node.args)
        self.body = node.body

    def walk(self):
        if self.is_module:
            for stmt in self.body:
                yield from walk_scope(stmt)
        else:
            yield from walk_body(self.node)

    def bindings(self, name: str) -> list[ast.AST]:
        """Every statement or node that binds ``name`` in this scope."""
        out = []
        for node in self.walk():
            if isinstance(node, ast.Name) and node.id == name and not isinstance(node.ctx, ast.Load):
                out.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name \
                    and node is not self.node:
                out.append(node)
        return out


class LayerAnalysis:
    """Builders and structures of one module (computed once, on demand)."""

    def __init__(self, mctx) -> None:
        self.mctx = mctx
        self.scopes: dict[int, _Scope] = {id(mctx.tree): _Scope(mctx.tree, mctx)}
        for stmt in mctx.tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.scopes[id(stmt)] = _Scope(stmt, mctx)
        self.builders: dict[str, Builder] = {}
        for stmt in mctx.tree.body:
            if isinstance(stmt, ast.FunctionDef):
                b = self._builder(stmt)
                if b is not None:
                    self.builders[stmt.name] = b
        self.structures: list[Structure] = []
        self._by_name: dict[tuple[int, str], Structure] = {}
        for b in self.builders.values():
            self._follow(b)

    # ------------------------------------------------------------------ lookup
    def structure_of(self, scope: ast.AST, name: str) -> Optional[Structure]:
        """The structure ``name`` holds in ``scope`` (a module-level function or the module)."""
        return self._by_name.get((id(scope), name))

    # --------------------------------------------------------------- builders
    def _builder(self, fn: ast.FunctionDef) -> Optional[Builder]:
        returns = [n for n in walk_body(fn) if isinstance(n, ast.Return)]
        if not returns:
            return None
        values = [r.value for r in returns]
        if any(v is None for v in values):
            return None
        if len(returns) == 1 and isinstance(values[0], ast.ListComp):
            self.mctx.ensure_parents(fn)
            comp = values[0]
            b = Builder(fn, returns, comp.elt)
            b.problem = self._homogeneous_comprehension(fn, comp)
            return b
        if not all(isinstance(v, ast.Name) for v in values) or len({v.id for v in values}) != 1:
            return None
        name = values[0].id
        # cheap filter before reaching definitions: the name is bound to a list somewhere
        if not any(isinstance(n, ast.Assign) and isinstance(n.value, (ast.List, ast.ListComp))
                   and any(isinstance(t, ast.Name) and t.id == name for t in n.targets) for n in walk_body(fn)):
            return None
        self.mctx.ensure_parents(fn)
        fctx = self.mctx.function(fn)
        defs = set()
        for r in returns:
            defs |= set(fctx.defs_before(r, name))
        if len(defs) != 1:
            return None
        d = next(iter(defs))
        node = d.node
        if d.kind != "assign" or not isinstance(node, ast.Assign) or len(node.targets) != 1 \
                or not isinstance(node.targets[0], ast.Name):
            return None
        if isinstance(node.value, ast.ListComp):
            b = Builder(fn, returns, node.value.elt, name)
            b.problem = self._homogeneous_comprehension(fn, node.value)
            if self._other_uses(fn, name, allowed={id(node)} | {id(r) for r in returns}):
                return None
            return b
        if not (isinstance(node.value, ast.List) and not node.value.elts):
            return None
        appends = [n for n in walk_body(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                   and n.func.attr == "append" and isinstance(n.func.value, ast.Name) and n.func.value.id == name]
        if len(appends) != 1 or len(appends[0].args) != 1:
            return None
        call = appends[0]
        stmt = self.mctx.parent(call)
        loop = self.mctx.parent(stmt)
        if not (isinstance(stmt, ast.Expr) and isinstance(loop, ast.For) and stmt in loop.body):
            return None
        if self._other_uses(fn, name, allowed={id(node), id(stmt)} | {id(r) for r in returns}):
            return None
        b = Builder(fn, returns, call.args[0], name)
        b.problem = self._homogeneous_loop(fn, loop)
        return b

    def _other_uses(self, fn: ast.FunctionDef, name: str, allowed: set[int]) -> bool:
        for stmt in walk_body(fn):
            if isinstance(stmt, ast.stmt) and id(stmt) not in allowed:
                if isinstance(stmt, (ast.For, ast.If, ast.While, ast.With, ast.Try)):
                    exprs = [getattr(stmt, "iter", None), getattr(stmt, "test", None), getattr(stmt, "target", None)]
                    if any(e is not None and any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(e))
                           for e in exprs):
                        return True
                    continue
                if any(isinstance(n, ast.Name) and n.id == name for n in walk_scope(stmt)):
                    return True
        return False

    def _key_iterable(self, fctx, it: ast.AST) -> Optional[str]:
        """``"keys"`` when ``it`` is an array of PRNG keys (a ``jax.random.split``),
        ``"range"`` for ``range(n)``; otherwise ``None``."""
        if isinstance(it, ast.Call):
            q = fctx.imports.qualname(it.func, fctx.shadowing)
            if q in ("jax.random.split",):
                return "keys"
            if isinstance(it.func, ast.Name) and it.func.id == "range" and "range" not in fctx.shadowing:
                return "range"
            return None
        if isinstance(it, ast.Name):
            values = fctx.assigned_values(it.id)
            if values and all(isinstance(v, ast.Call) and fctx.imports.qualname(v.func, fctx.shadowing)
                              == "jax.random.split" for v in values):
                return "keys"
            # `k1, *keys = jax.random.split(...)`
        return None

    def _homogeneous_comprehension(self, fn, comp: ast.ListComp) -> Optional[Decline]:
        fctx = self.mctx.function(fn)
        if len(comp.generators) != 1 or comp.generators[0].ifs:
            return Decline("L2S308", f"`{fn.name}` builds its list with a filtered or nested comprehension; the "
                           "number and shape of the layers cannot be read from the code", comp)
        gen = comp.generators[0]
        kind = self._key_iterable(fctx, gen.iter)
        var = gen.target.id if isinstance(gen.target, ast.Name) else None
        if kind is None or var is None:
            return Decline("L2S308", f"`{fn.name}` builds each layer from `{ast.unparse(gen.iter)}`: the layers may "
                           "differ in shape (only a loop over PRNG keys or over `range(n)` used to pick keys is "
                           "provably uniform)", gen.iter)
        return self._key_uses([comp.elt], var, kind, fn, fctx)

    def _homogeneous_loop(self, fn, loop: ast.For) -> Optional[Decline]:
        fctx = self.mctx.function(fn)
        kind = self._key_iterable(fctx, loop.iter)
        var = loop.target.id if isinstance(loop.target, ast.Name) else None
        if kind is None or var is None:
            return Decline("L2S308", f"`{fn.name}` builds each layer from `{ast.unparse(loop.iter)}`: the layers may "
                           "differ in shape (only a loop over PRNG keys or over `range(n)` used to pick keys is "
                           "provably uniform)", loop.iter)
        # names derived from the loop variable inside the body are keys too (split/fold_in)
        derived = {var}
        for stmt in loop.body:
            for node in walk_scope(stmt):
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                    q = fctx.imports.qualname(node.value.func, fctx.shadowing)
                    reads = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
                    if q in ("jax.random.split", "jax.random.fold_in") and reads & derived:
                        for t in node.targets:
                            derived |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
        return self._key_uses(loop.body, var, kind, fn, fctx, derived)

    def _key_uses(self, roots, var: str, kind: str, fn, fctx, derived: Optional[set] = None) -> Optional[Decline]:
        """The loop variable (and keys derived from it) may only be passed as a
        PRNG key: the first argument of a call, or ``fold_in(key, i)`` /
        ``keys[i]`` for an index."""
        derived = derived or {var}
        for root in roots:
            for node in ast.walk(root):
                if not (isinstance(node, ast.Name) and node.id in derived and isinstance(node.ctx, ast.Load)):
                    continue
                parent = self.mctx.parent(node)
                ok = False
                if kind == "keys" or node.id != var:
                    ok = (isinstance(parent, ast.Call) and parent.args and parent.args[0] is node) or (
                        isinstance(parent, ast.keyword) and parent.arg in ("key", "rng", "rngs", "prng_key"))
                    if isinstance(parent, ast.Assign):
                        ok = True  # re-binding a derived key
                    if isinstance(parent, ast.Call):
                        q = fctx.imports.qualname(parent.func, fctx.shadowing)
                        if is_under(q, "jax.random") and parent.args and parent.args[0] is node:
                            ok = True
                else:  # an index: fold_in(key, i) or keys[i]
                    if isinstance(parent, ast.Call) and len(parent.args) == 2 and parent.args[1] is node:
                        ok = fctx.imports.qualname(parent.func, fctx.shadowing) == "jax.random.fold_in"
                    if isinstance(parent, ast.Subscript) and parent.slice is node and isinstance(parent.value,
                                                                                                ast.Name):
                        ok = self._key_iterable(fctx, parent.value) == "keys"
                if not ok:
                    text = ast.unparse(parent) if isinstance(parent, ast.expr) else node.id
                    return Decline("L2S308", f"`{fn.name}` uses the per-layer `{node.id}` in `{short(text)}`: the "
                                   "layers may differ in shape or structure, so they cannot be stacked", node)
        return None

    # ------------------------------------------------------------------- flow
    def _follow(self, builder: Builder) -> None:
        st = Structure(builder)
        for r in builder.returns:
            st.uses.append(LayoutUse("builder-return", r.value))
        work: list[tuple[_Scope, str]] = []
        problems: list[Decline] = []
        for scope in self.scopes.values():
            calls = [node for node in scope.walk() if self._calls_builder(node, builder, scope)]
            if calls:
                self.mctx.ensure_parents(scope.node)
            for node in calls:
                parent = self.mctx.parent(node)
                if isinstance(parent, ast.Assign) and len(parent.targets) == 1 \
                        and isinstance(parent.targets[0], ast.Name) and parent.value is node:
                    work.append((scope, parent.targets[0].id))
                    continue
                flowed = self._flows_into(st, scope, node)
                returned = self._return_position(node)
                if flowed:
                    work.extend(flowed)
                elif returned is not False and not scope.is_module and scope.node is not builder.func:
                    work.extend(self._returned(st, scope.node, returned, problems, node))
                else:
                    problems.append(Decline("L2S309", f"the result of `{builder.name}(...)` is used as "
                                            f"`{short(ast.unparse(parent))}` (line {node.lineno}), which the "
                                            "stacked layout would change", node))
        if not work:
            return
        self.structures.append(st)
        seen: set[tuple[int, str]] = set()
        while work:
            scope, name = work.pop()
            key = (id(scope.node), name)
            if key in seen:
                continue
            seen.add(key)
            st.names.add(key)
            self._by_name[key] = st
            work.extend(self._uses(st, scope, name, problems))
        if problems:
            st.problem = min(problems, key=lambda d: (getattr(d.node, "lineno", 0), getattr(d.node, "col_offset", 0)))

    def _return_position(self, node: ast.AST):
        """``None`` when ``node`` is returned whole, its index when it is an item
        of a returned tuple, ``False`` otherwise."""
        parent = self.mctx.parent(node)
        if isinstance(parent, ast.Return):
            return None
        if isinstance(parent, ast.Tuple) and isinstance(self.mctx.parent(parent), ast.Return):
            return next(i for i, e in enumerate(parent.elts) if e is node)
        return False

    def _returned(self, st: Structure, fn: ast.AST, position, problems: list, node: ast.AST):
        """``fn`` returns the structure (whole, or as item ``position`` of a
        tuple): the names its callers bind to it hold the structure too."""
        more: list[tuple[_Scope, str]] = []
        if fn.name in st.return_position:
            if st.return_position[fn.name] != position:
                problems.append(Decline("L2S309", f"`{fn.name}` returns the list built by `{st.builder.name}` in "
                                        "different places of its result", node))
            return more
        st.return_position[fn.name] = position
        st.returned_from.append(fn.name)
        for other in self.scopes.values():
            for n in other.walk():
                if not (isinstance(n, ast.Call) and self._resolve_callee(n.func, other) is not None
                        and self._resolve_callee(n.func, other)[0] is fn):
                    continue
                self.mctx.ensure_parents(other.node)
                parent = self.mctx.parent(n)
                target = parent.targets[0] if isinstance(parent, ast.Assign) and len(parent.targets) == 1 else None
                if position is None and isinstance(target, ast.Name):
                    more.append((other, target.id))
                elif position is not None and isinstance(target, ast.Tuple) and position < len(target.elts) \
                        and isinstance(target.elts[position], ast.Name):
                    more.append((other, target.elts[position].id))
                elif position is None and self._flows_into(st, other, n):
                    more.extend(self._flows_into(st, other, n))
                elif isinstance(parent, ast.Expr) or (position is not None and isinstance(parent, ast.Starred)):
                    problems.append(Decline("L2S309", f"the result of `{fn.name}(...)` (holding the list built by "
                                            f"`{st.builder.name}`) is used as `{short(ast.unparse(parent))}`", n))
                elif not isinstance(parent, ast.Return):
                    problems.append(Decline("L2S309", f"the result of `{fn.name}(...)` (holding the list built by "
                                            f"`{st.builder.name}`) is used as `{short(ast.unparse(parent))}` "
                                            f"(line {n.lineno}), which the stacked layout would change", n))
        return more

    def _calls_builder(self, value: ast.AST, builder: Builder, scope: _Scope) -> bool:
        """``value`` is a call of the builder (not shadowed in ``scope``)."""
        return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == builder.name \
            and not self._locally_bound(scope, builder.name)

    def _locally_bound(self, scope: _Scope, name: str) -> bool:
        return not scope.is_module and (name in scope.params or bool(scope.bindings(name)))

    def _resolve_callee(self, func: ast.AST, scope: _Scope) -> Optional[tuple[ast.FunctionDef, int]]:
        """The module function a call reaches, and how many leading positional
        arguments a ``partial`` already bound."""
        imports = self.mctx.imports
        bound = 0
        for _ in range(4):
            if isinstance(func, ast.Name):
                target = self.scopes_by_name().get(func.id)
                if target is not None and not self._locally_bound(scope, func.id):
                    return target, bound
                # a name bound once to a transform of a module function: step = jax.jit(train_step)
                values = self._single_value(scope, func.id)
                if values is None:
                    return None
                func = values
                continue
            if isinstance(func, ast.Call):
                q = imports.qualname(func.func)
                if q in TRANSFORMS and func.args:
                    if q == "functools.partial":
                        bound += len(func.args) - 1
                    func = func.args[0]
                    continue
            return None
        return None

    def _single_value(self, scope: _Scope, name: str) -> Optional[ast.AST]:
        found = None
        for node in scope.walk():
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                if found is not None:
                    return None
                found = node.value
        if found is None and not scope.is_module:
            return self._single_value(self.scopes[id(self.mctx.tree)], name)
        return found

    def scopes_by_name(self) -> dict[str, ast.FunctionDef]:
        return {s.node.name: s.node for s in self.scopes.values() if not s.is_module}

    def _uses(self, st: Structure, scope: _Scope, name: str, problems: list) -> list[tuple[_Scope, str]]:
        """Classify every use of ``name`` (holding the structure) in ``scope``;
        returns further (scope, name) pairs holding it."""
        mctx = self.mctx
        mctx.ensure_parents(scope.node)
        more: list[tuple[_Scope, str]] = []
        builder = st.builder
        # every binding of the name must produce the structure
        for b in scope.bindings(name):
            stmt = _statement(mctx, b)
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and stmt.targets[0] is b:
                if self._calls_builder(stmt.value, builder, scope) or self._tree_map(stmt.value, name, scope):
                    continue
                callee = self._resolve_callee(stmt.value.func, scope) if isinstance(stmt.value, ast.Call) else None
                if callee is not None and st.return_position.get(callee[0].name, False) is None:
                    continue
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call):
                grad = self._grad_target(stmt, b, name, scope)
                if grad:
                    continue
                callee = self._resolve_callee(stmt.value.func, scope)
                t = stmt.targets[0] if len(stmt.targets) == 1 else None
                if callee is not None and callee[0].name in st.return_position and isinstance(t, ast.Tuple):
                    pos = st.return_position[callee[0].name]
                    if pos is not None and pos < len(t.elts) and t.elts[pos] is b:
                        continue
            problems.append(Decline("L2S309", f"`{name}` holds the list built by `{builder.name}` but is also "
                                    f"assigned `{short(ast.unparse(stmt) if isinstance(stmt, ast.AST) else name)}`"
                                    f" (line {getattr(stmt, 'lineno', '?')})", b))
        for node in scope.walk():
            if not (isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)):
                continue
            parent = mctx.parent(node)
            # loops over the structure: `for ... in v`, `for ... in v[a:b]`
            loop = _loop_over(mctx, node)
            if loop is not None:
                if loop not in st.loops:
                    st.loops.append(loop)
                continue
            # `for i in range(len(v))` + `v[i]` in the body
            rng = _range_len_loop(mctx, node)
            if rng is not None:
                if rng not in st.loops:
                    st.loops.append(rng)
                continue
            if isinstance(parent, ast.Subscript) and parent.value is node and _index_of_range_loop(mctx, parent, st):
                continue
            if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "len" \
                    and len(parent.args) == 1 and parent.args[0] is node:
                st.uses.append(LayoutUse("len", parent, node))
                continue
            if isinstance(parent, ast.Subscript) and parent.value is node and isinstance(parent.ctx, ast.Load):
                sl = parent.slice
                if int_literal(sl) is not None:
                    st.uses.append(LayoutUse("index", parent, node, ast.unparse(sl)))
                    continue
                if isinstance(sl, ast.Slice) and all(b is None or int_literal(b) is not None
                                                     for b in (sl.lower, sl.upper, sl.step)):
                    st.uses.append(LayoutUse("slice", parent, node, ast.unparse(sl)))
                    more.extend(self._flows_into(st, scope, parent))
                    continue
            returned = self._return_position(node)
            if returned is not False:
                fn = scope.node
                if scope.is_module or fn is builder.func:
                    problems.append(Decline("L2S309", f"`{name}` is returned at module level", parent))
                    continue
                more.extend(self._returned(st, fn, returned, problems, node))
                continue
            if self._tree_map_arg(parent, node, scope):
                target = _assigned_name(mctx, parent)
                if target is not None:
                    more.append((scope, target))
                    continue
            flowed = self._flows_into(st, scope, node)
            if flowed is not None:
                more.extend(flowed)
                more.extend(self._gradients_of(scope, node))
                continue
            stmt = _statement(mctx, node)
            problems.append(Decline("L2S309", f"`{name}` (the list built by `{builder.name}`) is used as "
                                    f"`{short(ast.unparse(parent) if isinstance(parent, ast.expr) else ast.unparse(stmt))}`"
                                    f" (line {node.lineno}); with the layers stacked into one pytree that would "
                                    "change meaning", node))
        return more

    def _flows_into(self, st: Structure, scope: _Scope, expr: ast.AST) -> Optional[list[tuple[_Scope, str]]]:
        """``expr`` passed as an argument to a module function: the parameter
        it binds holds the structure.  ``None`` when it is not such an argument."""
        call = self.mctx.parent(expr)
        kw = None
        if isinstance(call, ast.keyword):
            kw = call.arg
            call = self.mctx.parent(call)
        if not isinstance(call, ast.Call) or expr is call.func:
            return None
        callee = self._resolve_callee(call.func, scope)
        if callee is None:
            # jax.grad(f)(v, ...) is handled as the value of an assignment; a plain call to an
            # unknown function cannot be followed
            return None
        fn, bound = callee
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args]
        if kw is not None:
            param = kw if kw in params + [a.arg for a in fn.args.kwonlyargs] else None
        else:
            if any(isinstance(a, ast.Starred) for a in call.args):
                return None
            pos = bound + next(i for i, a in enumerate(call.args) if a is expr)
            param = params[pos] if pos < len(params) else None
        if param is None:
            return None
        return [(self.scopes[id(fn)], param)]

    def _gradients_of(self, scope: _Scope, arg: ast.AST) -> list[tuple[_Scope, str]]:
        """``g = jax.grad(f)(v, ...)``: ``g`` has the structure of ``v`` too."""
        call = self.mctx.parent(arg)
        if not (isinstance(call, ast.Call) and call.args and call.args[0] is arg and isinstance(call.func, ast.Call)):
            return []
        q = self.mctx.imports.qualname(call.func.func)
        if q not in ("jax.grad", "jax.value_and_grad") or call.func.keywords:
            return []
        stmt = self.mctx.parent(call)
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and stmt.value is call):
            return []
        t = stmt.targets[0]
        if q == "jax.grad" and isinstance(t, ast.Name):
            return [(scope, t.id)]
        if q == "jax.value_and_grad" and isinstance(t, ast.Tuple) and len(t.elts) == 2 \
                and isinstance(t.elts[1], ast.Name):
            return [(scope, t.elts[1].id)]
        return []

    def _grad_target(self, stmt: ast.Assign, target_node: ast.AST, name: str, scope: _Scope) -> bool:
        """``g = jax.grad(f)(v, ...)`` / ``loss, g = jax.value_and_grad(f)(v, ...)``: ``g`` has
        the structure of ``v`` (argument 0)."""
        call = stmt.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Call)):
            return False
        q = self.mctx.imports.qualname(call.func.func)
        if q not in ("jax.grad", "jax.value_and_grad") or len(call.func.args) != 1 or call.func.keywords:
            return False
        first = call.args[0] if call.args else None
        if not (isinstance(first, ast.Name) and self._by_name.get((id(scope.node), first.id))):
            return False
        t = stmt.targets[0]
        if q == "jax.grad":
            return t is target_node
        return isinstance(t, ast.Tuple) and len(t.elts) == 2 and t.elts[1] is target_node

    def _tree_map(self, value: ast.AST, name: str, scope: _Scope) -> bool:
        q = self.mctx.imports.qualname(value.func) if isinstance(value, ast.Call) else None
        return q in ("jax.tree.map", "jax.tree_util.tree_map") and self._elementwise(value.args[0] if value.args
                                                                                     else None)

    def _tree_map_arg(self, call: ast.AST, node: ast.AST, scope: _Scope) -> bool:
        if not isinstance(call, ast.Call) or node not in call.args[1:]:
            return False
        return self._tree_map(call, "", scope)

    def _elementwise(self, fn: Optional[ast.AST]) -> bool:
        """A lambda computing leaf by leaf with arithmetic and element-wise jnp functions."""
        if not isinstance(fn, ast.Lambda):
            return False
        for node in ast.walk(fn.body):
            if isinstance(node, ast.Call):
                if self.mctx.imports.qualname(node.func) not in ELEMENTWISE:
                    return False
            elif isinstance(node, (ast.Subscript, ast.Attribute, ast.Compare, ast.BoolOp, ast.IfExp,
                                   ast.ListComp, ast.GeneratorExp, ast.Lambda)) and node is not fn:
                if isinstance(node, ast.Attribute) and self.mctx.imports.qualname(node) in ELEMENTWISE:
                    continue
                if isinstance(node, ast.Attribute) and isinstance(self.mctx.parent(node), ast.Call):
                    continue
                return False
        return True


def _statement(mctx, node: ast.AST) -> ast.AST:
    cur = node
    while cur is not None and not isinstance(cur, ast.stmt):
        cur = mctx.parent(cur)
    return cur if cur is not None else node


def _assigned_name(mctx, expr: ast.AST) -> Optional[str]:
    parent = mctx.parent(expr)
    if isinstance(parent, ast.Assign) and parent.value is expr and len(parent.targets) == 1 \
            and isinstance(parent.targets[0], ast.Name):
        return parent.targets[0].id
    return None


def _loop_over(mctx, node: ast.Name) -> Optional[ast.For]:
    """The ``for`` statement iterating ``node`` (or ``node[a:b]``)."""
    cur: ast.AST = node
    parent = mctx.parent(cur)
    if isinstance(parent, ast.Subscript) and parent.value is cur and isinstance(parent.slice, ast.Slice):
        cur, parent = parent, mctx.parent(parent)
    if isinstance(parent, ast.For) and parent.iter is cur:
        return parent
    return None


def _range_len_loop(mctx, node: ast.Name) -> Optional[ast.For]:
    """``node`` in ``for i in range(len(node))`` (the loop then indexes ``node[i]``)."""
    call = mctx.parent(node)
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "len"):
        return None
    rng = mctx.parent(call)
    if not (isinstance(rng, ast.Call) and isinstance(rng.func, ast.Name) and rng.func.id == "range"
            and rng.args == [call]):
        return None
    loop = mctx.parent(rng)
    if isinstance(loop, ast.For) and loop.iter is rng:
        return loop
    return None


def _index_of_range_loop(mctx, sub: ast.Subscript, st: Structure) -> bool:
    """``v[i]`` where ``i`` is the index of a loop over ``range(len(v))`` already recorded."""
    if not isinstance(sub.slice, ast.Name):
        return False
    cur = mctx.parent(sub)
    while cur is not None:
        if isinstance(cur, ast.For) and cur in st.loops and isinstance(cur.target, ast.Name) \
                and cur.target.id == sub.slice.id:
            return True
        cur = mctx.parent(cur)
    return False
