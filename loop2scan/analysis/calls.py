"""Where a function runs: under a JAX transformation, eagerly, or unknown.

Outside any transformation a ``lax.scan`` whose step is a closure defined on
each call is traced and compiled on every call (the fresh function object
misses JAX's caches), while inside ``jit``/``grad``/``vmap``/a scan body... it
is traced once with the function around it.  This module answers, for a
function holding a loop, which of the two it is, from the project's source:

* a **use index** per module, built in one walk: every place a name is called,
  passed to a transformation (``jax.jit(f)``, ``lax.scan(step, ...)``,
  ``partial(f, ...)`` given to one, a lambda given to one), or otherwise
  referred to (stored, returned, passed to an unknown function), with the
  scope it happens in;
* :func:`function_context`, which combines the uses of a function's name
  (in its module and in the modules that import it, or, for a method, every
  module that names it) with the contexts of the scopes they happen in,
  recursively.  Decorators count first (``@jax.jit``, ``@partial(jax.jit, ...)``,
  ``@nnx.jit``, ``@eqx.filter_jit``...).

Known eager contexts: module top level, class bodies, constructors, and
functions only called from such places.  A function with no caller in sight
(a library's public function, a method called through an instance) is
``unknown``: it may run eagerly.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Iterator, Optional

from ..plan import Context
from .nodes import children

FUNCTION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef)

#: Transformations that trace the functions given to them, by namespace and name.
_API = {"jit", "pjit", "grad", "value_and_grad", "vmap", "pmap", "jacfwd", "jacrev", "jacobian", "hessian",
        "jvp", "vjp", "linearize", "checkpoint", "remat", "shard_map", "eval_shape", "make_jaxpr", "xmap",
        "named_call"}
_CONTROL = {"scan", "fori_loop", "while_loop", "cond", "switch", "map", "associative_scan", "custom_root",
            "custom_linear_solve"}
_NAMESPACES: dict[str, set[str]] = {
    "jax": _API,
    "jax.experimental.pjit": {"pjit"},
    "jax.experimental.shard_map": {"shard_map"},
    "jax.experimental.ode": {"odeint"},
    "jax.lax": _CONTROL,
    "flax.nnx": _API | _CONTROL,
    "flax.linen": {"jit", "scan", "vmap", "remat", "checkpoint", "while_loop", "cond", "switch", "remat_scan"},
    "flax.linen.transforms": {"jit", "scan", "vmap", "remat", "checkpoint", "while_loop", "cond", "switch"},
    "haiku": {"vmap", "scan", "remat", "checkpoint", "fori_loop", "while_loop", "cond", "switch", "map"},
    "equinox": {"filter_jit", "filter_grad", "filter_value_and_grad", "filter_vmap", "filter_pmap",
                "filter_checkpoint", "filter_eval_shape", "filter_jvp", "filter_vjp", "filter_shard_map"},
    "equinox.internal": {"scan", "while_loop", "filter_checkpoint"},
}
#: Decorators that trace the function they decorate (``@jax.custom_jvp`` does not: the function runs as called).
CONSTRUCTORS = {"__init__", "__post_init__", "__new__"}
_PARTIAL = {"functools.partial", "partial"}
#: Uses of a name farther than this many modules away are not followed: the context stays unknown.
MODULE_LIMIT = 40
_DEPTH_LIMIT = 8


def transform_name(qual: Optional[str]) -> Optional[str]:
    """``qual`` (a qualified name) is a JAX transformation: its display name."""
    if not qual or "." not in qual:
        return None
    namespace, name = qual.rsplit(".", 1)
    names = _NAMESPACES.get(namespace)
    if names is None and namespace.startswith("jax._src"):
        # JAX's own modules: api.jit, control_flow.scan, lax.fori_loop...
        names = _API | _CONTROL if name != "map" else set()
    if names is None and namespace.startswith("flax.") and namespace.rsplit(".", 1)[-1] == "transforms":
        names = _API | _CONTROL
    return qual if names and name in names else None


@dataclass
class Use:
    """One use of a name: ``kind`` is ``"call"`` (called), ``"transform"`` (given
    to a transformation: ``how`` names it) or ``"ref"`` (any other read: stored,
    returned, passed on); ``scope`` is the function, lambda, class or module it
    happens in; ``receiver`` is the text of ``x`` in ``x.name``."""

    kind: str
    scope: ast.AST
    line: int
    how: str = ""
    receiver: Optional[str] = None


class UseIndex:
    """Every use of every name in one module, found in one walk, with the scopes
    (and the transformations around lambdas and decorated functions)."""

    def __init__(self, mctx) -> None:
        self.mctx = mctx
        self.by_name: dict[str, list[Use]] = {}  # Name loads
        self.by_attr: dict[str, list[Use]] = {}  # x.attr loads
        self.scope_parent: dict[int, ast.AST] = {}  # scope -> enclosing scope
        self.traced_lambdas: dict[int, str] = {}  # lambda -> the transformation it is given to
        self.defs: dict[int, ast.AST] = {}  # every function definition, by id
        self._walk(mctx.tree, mctx.tree)

    def _qual(self, expr: ast.AST) -> Optional[str]:
        return self.mctx.imports.qualname(expr)

    def transform_of(self, call: ast.Call) -> Optional[str]:
        return transform_name(self._qual(call.func))

    def _walk(self, node: ast.AST, scope: ast.AST) -> None:
        # iterative: deep expressions must not reach Python's recursion limit
        stack: list[tuple[ast.AST, ast.AST, Optional[str]]] = [(node, scope, None)]
        while stack:
            node, scope, given_to = stack.pop()
            if isinstance(node, FUNCTION_TYPES + (ast.ClassDef,)):
                if node is not scope:
                    # decorators, defaults and bases belong to the enclosing scope
                    for child in (*node.decorator_list, *_signature_parts(node)):
                        stack.append((child, scope, None))
                    self.scope_parent[id(node)] = scope
                    if isinstance(node, FUNCTION_TYPES):
                        self.defs[id(node)] = node
                    for child in node.body:
                        stack.append((child, node, None))
                    continue
            if isinstance(node, ast.Lambda) and node is not scope:
                self.scope_parent[id(node)] = scope
                if given_to is not None:
                    self.traced_lambdas[id(node)] = given_to
                stack.append((node.body, node, None))
                for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    stack.append((d, scope, None))
                continue
            if isinstance(node, ast.Call):
                transform = self.transform_of(node)
                passes = _function_arguments(node, self._qual)
                self._record_callee(node.func, scope)
                for child in _call_children(node):
                    arg_transform = transform if child in passes else None
                    if arg_transform is None and given_to is not None and child in passes \
                            and self._qual(node.func) in _PARTIAL:
                        arg_transform = given_to  # jax.jit(partial(f, x)): f is given to jit
                    if arg_transform is not None:
                        self._record_passed(child, scope, arg_transform)
                    stack.append((child, scope, arg_transform))
                continue
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if id(node) not in self._seen:
                    self.by_name.setdefault(node.id, []).append(Use("ref", scope, node.lineno))
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                if id(node) not in self._seen:
                    self.by_attr.setdefault(node.attr, []).append(
                        Use("ref", scope, node.lineno, receiver=_text(node.value)))
            for child in children(node):
                stack.append((child, scope, given_to if isinstance(node, (ast.List, ast.Tuple, ast.Starred))
                              else None))

    @property
    def _seen(self) -> set[int]:
        seen = self.__dict__.get("_seen_ids")
        if seen is None:
            seen = self.__dict__["_seen_ids"] = set()
        return seen

    def _record_callee(self, func: ast.AST, scope: ast.AST) -> None:
        self._seen.add(id(func))
        if isinstance(func, ast.Call):
            # `Cls(...)(...)`: a call of `Cls.__call__` (recorded with the class as its receiver)
            self.by_attr.setdefault("__call__", []).append(Use("call", scope, func.lineno, how="instance",
                                                               receiver=_text(func.func)))
        elif isinstance(func, ast.Name):
            self.by_name.setdefault(func.id, []).append(Use("call", scope, func.lineno))
        elif isinstance(func, ast.Attribute):
            self.by_attr.setdefault(func.attr, []).append(Use("call", scope, func.lineno,
                                                              receiver=_text(func.value)))

    def _record_passed(self, expr: ast.AST, scope: ast.AST, transform: str) -> None:
        target = expr
        if isinstance(target, ast.Call) and self._qual(target.func) in _PARTIAL and target.args:
            target = target.args[0]  # jax.jit(partial(f, x)): f
        if isinstance(target, ast.Name):
            self._seen.add(id(target))
            self.by_name.setdefault(target.id, []).append(Use("transform", scope, target.lineno, how=transform))
        elif isinstance(target, ast.Attribute):
            self._seen.add(id(target))
            self.by_attr.setdefault(target.attr, []).append(Use("transform", scope, target.lineno, how=transform,
                                                                receiver=_text(target.value)))

    def scopes_around(self, scope: ast.AST) -> Iterator[ast.AST]:
        cur = self.scope_parent.get(id(scope))
        while cur is not None:
            yield cur
            cur = self.scope_parent.get(id(cur))


def _signature_parts(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.ClassDef):
        return [*node.bases, *(k.value for k in node.keywords)]
    args = node.args
    out = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
    for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if a is not None and a.annotation is not None:
            out.append(a.annotation)
    if node.returns is not None:
        out.append(node.returns)
    return out


def _call_children(call: ast.Call) -> list[ast.AST]:
    return [*call.args, *(k.value for k in call.keywords), call.func]


def _function_arguments(call: ast.Call, qual) -> list[ast.AST]:
    """The arguments of a call that may be functions it is given (every argument:
    ``lax.cond(p, f, g, x)``, ``lax.switch(i, [f, g], x)``)."""
    return [*call.args, *(k.value for k in call.keywords)]


def _text(node: ast.AST) -> Optional[str]:
    try:
        return ast.unparse(node)
    except Exception:  # noqa: BLE001 - only for messages and receivers
        return None


def use_index(mctx) -> UseIndex:
    idx = mctx.__dict__.get("_use_index")
    if idx is None:
        idx = mctx.__dict__["_use_index"] = UseIndex(mctx)
    return idx


# ----------------------------------------------------------------- contexts
TRACED, EAGER, UNKNOWN = "traced", "eager", "unknown"


def function_context(mctx, func: ast.AST) -> Context:
    """Where ``func`` (a function definition of ``mctx``) runs."""
    cache = mctx.__dict__.setdefault("_function_contexts", {})
    key = id(func)
    if key not in cache:
        cache[key] = None  # in progress: a recursive call says nothing new
        cache[key] = _Resolver(mctx).function(func, 0)
    return cache[key] or Context(UNKNOWN, "it is called recursively only")


class _Resolver:
    def __init__(self, mctx) -> None:
        self.mctx = mctx

    def function(self, func: ast.AST, depth: int, mctx=None) -> Optional[Context]:
        mctx = mctx or self.mctx
        name = func.name
        for dec in func.decorator_list:
            how = _decorator_transform(dec, mctx)
            if how is not None:
                return Context(TRACED, f"decorated with `@{_short(how)}`")
        idx = use_index(mctx)
        parent = idx.scope_parent.get(id(func), mctx.tree)
        cls = parent if isinstance(parent, ast.ClassDef) else None
        if cls is not None and name in CONSTRUCTORS:
            return Context(EAGER, f"`{cls.name}.{name}` is a constructor")
        if depth > _DEPTH_LIMIT:
            return Context(UNKNOWN, "its callers are too far away to follow")
        uses = self._uses(func, mctx, idx, parent, cls)
        if uses is None:
            return Context(UNKNOWN, f"`{name}` is used in too many modules to follow")
        where = self._public(func, mctx, parent, cls)
        verdicts: list[tuple[str, str]] = []
        for use, umctx in uses:
            verdicts.append(self._use(use, umctx, name, depth))
        if not verdicts:
            if where is not None:
                return Context(UNKNOWN, where)
            return Context(UNKNOWN, f"no caller of `{_display(func, cls)}` is seen"
                           + (" in the project" if mctx.project is not None else " in this module"))
        unknown = [r for k, r in verdicts if k == UNKNOWN]
        if unknown:
            return Context(UNKNOWN, unknown[0])
        eager = [r for k, r in verdicts if k == EAGER]
        if eager:
            return Context(EAGER, eager[0])
        if where is not None:
            return Context(UNKNOWN, f"{where}; callers in the project run it traced")
        return Context(TRACED, verdicts[0][1])

    def _public(self, func, mctx, parent, cls) -> Optional[str]:
        """Why callers out of sight may run ``func`` (a public name of a library)."""
        if mctx.project is None or mctx.name is None:
            return None
        if cls is not None and isinstance(parent, ast.ClassDef) and idx_is_module(mctx, parent):
            if func.name.startswith("_") and not (func.name.startswith("__") and func.name.endswith("__")):
                return None
            why = mctx.project.public(mctx.name, cls.name)
            return f"{why} (callers outside the project may run `{cls.name}.{func.name}` eagerly)" if why else None
        if parent is mctx.tree:
            why = mctx.project.public(mctx.name, func.name)
            return f"{why} (callers outside the project may run it eagerly)" if why else None
        return None

    def _uses(self, func, mctx, idx: UseIndex, parent, cls) -> Optional[list[tuple[Use, object]]]:
        name = func.name
        out: list[tuple[Use, object]] = []
        if cls is not None:
            # a method: every `x.name` in this module and in the modules that name it
            modules = [mctx]
            if mctx.project is not None and mctx.name is not None:
                others = [m for m in sorted(mctx.project.paths) if m != mctx.name and mctx.project.mentions(m, name)]
                if len(others) > MODULE_LIMIT:
                    return None
                modules += [c for c in (mctx.project.module_context(m) for m in others) if c is not None]
            for m in modules:
                uses = use_index(m).by_attr.get(name, ())
                if name == "__call__":  # `Cls(...)(...)` and `x.__call__(...)`; other calls of instances are not seen
                    uses = [u for u in uses if u.how != "instance"
                            or (u.receiver or "").split(".")[-1] == cls.name]
                out += [(u, m) for u in uses]
            return out
        if parent is not mctx.tree:
            # a nested function: the uses of its name in the scope defining it
            for use in idx.by_name.get(name, ()):
                if use.scope is parent or any(s is parent for s in idx.scopes_around(use.scope)):
                    out.append((use, mctx))
            return out
        for use in idx.by_name.get(name, ()):
            if not _shadowed(use.scope, name, idx, mctx):
                out.append((use, mctx))
        project = mctx.project
        if project is not None and mctx.name is not None:
            importers = project.importers(mctx.name, name)
            if len({m for m, _ in importers}) > MODULE_LIMIT:
                return None
            for other, how in importers:
                omctx = project.module_context(other)
                if omctx is None:
                    continue
                oidx = use_index(omctx)
                if "." in how:
                    alias, attr = how.rsplit(".", 1)
                    out += [(u, omctx) for u in oidx.by_attr.get(attr, ()) if u.receiver == alias]
                else:
                    out += [(u, omctx) for u in oidx.by_name.get(how, ())
                            if not _shadowed(u.scope, how, oidx, omctx)]
        return out

    def _use(self, use: Use, mctx, name: str, depth: int) -> tuple[str, str]:
        where = f"line {use.line}" if mctx is self.mctx else f"{mctx.display_path()}:{use.line}"
        if use.kind == "transform":
            return TRACED, f"`{name}` is given to `{_short(use.how)}` at {where}"
        if use.kind == "ref":
            return UNKNOWN, f"`{name}` is passed on or stored at {where}, out of sight of the analysis"
        kind, reason = self.scope(use.scope, mctx, depth + 1)
        if kind == TRACED:
            return TRACED, f"called at {where} from {reason}"
        if kind == EAGER:
            return EAGER, f"called at {where} from {reason}"
        return UNKNOWN, f"called at {where} from {reason}"

    def scope(self, scope: ast.AST, mctx, depth: int) -> tuple[str, str]:
        """The context of a scope a call happens in, with words for it."""
        idx = use_index(mctx)
        if isinstance(scope, ast.Module):
            return EAGER, "module top level"
        if isinstance(scope, ast.ClassDef):
            return EAGER, f"the body of class `{scope.name}`"
        if isinstance(scope, ast.Lambda):
            how = idx.traced_lambdas.get(id(scope))
            if how is not None:
                return TRACED, f"a lambda given to `{_short(how)}`"
            return self.scope(idx.scope_parent.get(id(scope), mctx.tree), mctx, depth)
        cache = mctx.__dict__.setdefault("_function_contexts", {})
        if id(scope) in cache:
            ctx = cache[id(scope)]
            if ctx is None:  # in progress: recursion adds nothing
                return TRACED, f"`{scope.name}` (recursively)"
        else:
            cache[id(scope)] = None
            ctx = cache[id(scope)] = self.function(scope, depth, mctx)
        label = f"`{scope.name}`"
        if ctx.kind == TRACED:
            return TRACED, f"{label} ({ctx.reason})"
        return ctx.kind, f"{label} ({ctx.reason})"


def idx_is_module(mctx, cls: ast.ClassDef) -> bool:
    """``cls`` is a class defined at the top level of its module."""
    return any(stmt is cls for stmt in mctx.tree.body)


def _shadowed(scope: ast.AST, name: str, idx: UseIndex, mctx) -> bool:
    """``name`` is bound locally in ``scope`` or a function around it (so the use
    is not of the module-level definition)."""
    cur = scope
    while cur is not None and not isinstance(cur, ast.Module):
        if isinstance(cur, FUNCTION_TYPES) and name in mctx.function(cur).locals:
            return True
        if isinstance(cur, ast.Lambda) and name in {a.arg for a in cur.args.args}:
            return True
        cur = idx.scope_parent.get(id(cur))
    return False


def _decorator_transform(dec: ast.AST, mctx) -> Optional[str]:
    qual = mctx.imports.qualname(dec.func if isinstance(dec, ast.Call) else dec)
    if isinstance(dec, ast.Call) and qual in _PARTIAL and dec.args:
        return transform_name(mctx.imports.qualname(dec.args[0]))
    return transform_name(qual)


def _short(qual: str) -> str:
    """``jax._src.api.jit`` -> ``jax.jit`` for messages; public names as they are."""
    if qual.startswith("jax._src."):
        return "jax." + qual.rsplit(".", 1)[-1] if qual.rsplit(".", 1)[-1] in _API else \
            "jax.lax." + qual.rsplit(".", 1)[-1]
    return qual


def _display(func: ast.AST, cls: Optional[ast.ClassDef]) -> str:
    return f"{cls.name}.{func.name}" if cls is not None else func.name
