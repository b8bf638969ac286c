"""Builders of per-layer parameter lists that can build the stacked layout directly.

A builder returning ``[init_block(k, d_in, d_out) for k in keys]`` is changed
for the stacked layout.  The general form stacks the built list,
``jax.tree.map(lambda *layer: jnp.stack(layer), *[...])``.  Where the list is
one call per PRNG key, the stacked parameters are that call mapped over the
keys: ``jax.vmap(lambda k: init_block(k, d_in, d_out))(keys)`` gives the same
arrays (a ``jax.random`` call draws the same numbers for a key inside ``vmap``
as outside it; values that do not depend on the key are computed once and
broadcast) with one traced call instead of one per layer.

That holds when (:func:`vmap_variable`):

* the list is a comprehension with one ``for`` over a JAX array of keys
  (``jax.random.split(...)``, or a name bound only to such a split), no ``if``;
* the element is one call of a function whose source is visible, the
  comprehension variable appears in it only as whole arguments, and the other
  arguments do not depend on it;
* inside that function the key parameters are only used as PRNG keys: the key
  of a ``jax.random`` call, split or folded into more keys, or passed on to
  another visible function that uses them the same way; and nothing computed
  from them reaches Python control flow or a call outside JAX (under ``vmap``
  they are traced);
* what the function returns is shown to be a pytree of JAX arrays (no Python
  numbers or strings, which ``vmap`` would return differently).

Anything else keeps the ``jax.tree.map`` form.
"""

from __future__ import annotations

import ast
from typing import Optional

from .imports import is_under
from .nodes import walk

_KEY_KEYWORDS = ("key", "rng", "prng_key", "rngs")
#: Array attributes a value computed from a key may be read through.
_ARRAY_ATTRIBUTES = {"T", "shape", "dtype", "ndim", "astype", "reshape", "at", "set", "mT"}


def vmap_variable(mctx, fn: ast.AST, expr: ast.AST) -> Optional[str]:
    """The comprehension variable when ``expr`` (returned by the builder ``fn``
    of module ``mctx``) can be built as ``jax.vmap(lambda k: f(k, ...))(keys)``;
    ``None`` otherwise."""
    if not isinstance(expr, ast.ListComp) or len(expr.generators) != 1:
        return None
    gen = expr.generators[0]
    if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name):
        return None
    var = gen.target.id
    fctx = mctx.function(fn)
    if not _key_array(fctx, gen.iter):
        return None
    call = expr.elt
    if not isinstance(call, ast.Call) or any(isinstance(a, ast.Starred) for a in call.args) \
            or any(k.arg is None for k in call.keywords):
        return None
    if any(isinstance(n, ast.Name) and n.id == var for n in walk(call.func)):
        return None
    key_args: list[tuple[Optional[int], Optional[str]]] = []
    for i, a in enumerate(call.args):
        if isinstance(a, ast.Name) and a.id == var:
            key_args.append((i, None))
        elif any(isinstance(n, ast.Name) and n.id == var for n in walk(a)):
            return None
    for k in call.keywords:
        if isinstance(k.value, ast.Name) and k.value.id == var:
            key_args.append((None, k.arg))
        elif any(isinstance(n, ast.Name) and n.id == var for n in walk(k.value)):
            return None
    if not key_args:
        return None
    found = _visible(mctx, fctx, call.func)
    if found is None:
        return None
    callee, cmctx = found
    params = _params_for(callee, key_args)
    if params is None or not _key_only(cmctx, callee, params, 0):
        return None
    from .kinds import function_result_kind

    if function_result_kind(cmctx, callee).is_array_tree() is not True:
        return None
    return var


def _key_array(fctx, it: ast.AST) -> bool:
    """``it`` is a JAX array of PRNG keys: a ``jax.random.split``, or a name
    bound only to one."""
    def is_split(v) -> bool:
        return isinstance(v, ast.Call) and fctx.imports.qualname(v.func, fctx.shadowing) == "jax.random.split"

    if is_split(it):
        return True
    if isinstance(it, ast.Name) and it.id not in fctx.params:
        values = fctx.assigned_values(it.id)
        return bool(values) and all(not isinstance(v, tuple) and is_split(v) for v in values)
    return False


def _visible(mctx, fctx, func: ast.AST):
    """``(FunctionDef, ModuleContext)`` of a module-level function of this
    module or of another module of the project, or ``None``."""
    if isinstance(func, ast.Name):
        if func.id in fctx.locals:
            return None
        fn = mctx.module_functions.get(func.id)
        if fn is not None:
            return (fn, mctx) if isinstance(fn, ast.FunctionDef) else None
    found = mctx.imported_function(func, fctx.imports, fctx.shadowing)
    if found is not None and isinstance(found[0], ast.FunctionDef):
        return found
    return None


def _params_for(fn: ast.FunctionDef, args: list[tuple[Optional[int], Optional[str]]]) -> Optional[list[str]]:
    """The parameters of ``fn`` the key arguments land in (``None``: not plain)."""
    a = fn.args
    if a.vararg is not None or a.kwarg is not None:
        return None
    positional = [x.arg for x in a.posonlyargs + a.args]
    keyword = {x.arg for x in a.args + a.kwonlyargs}
    out = []
    for pos, kw in args:
        if pos is not None:
            if pos >= len(positional):
                return None
            out.append(positional[pos])
        elif kw in keyword:
            out.append(kw)
        else:
            return None
    return out


def _key_only(mctx, fn: ast.FunctionDef, keys: list[str], depth: int) -> bool:
    """Inside ``fn`` the parameters ``keys`` (and every value computed from
    them) are used only as PRNG keys and array values of JAX operations."""
    if depth > 3:
        return False
    fctx = mctx.function(fn)
    mctx.ensure_parents(fn)
    if any(isinstance(n, (ast.Global, ast.Nonlocal)) for n in walk(fn)):
        return False
    tainted = set(keys)
    # values computed from the keys: fixed point over the function's assignments
    changed = True
    while changed:
        changed = False
        for node in walk(fn):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node.value is not None:
                reads = {n.id for n in walk(node.value) if isinstance(n, ast.Name)}
                if reads & tainted:
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    for t in targets:
                        for n in walk(t):
                            if isinstance(n, ast.Name) and n.id not in tainted:
                                tainted.add(n.id)
                                changed = True
    # every read of them is checked: control flow, a loop over them, a call outside JAX declines
    for node in walk(fn):
        if not (isinstance(node, ast.Name) and node.id in tainted and isinstance(node.ctx, ast.Load)):
            continue
        if not _allowed_use(mctx, fctx, node, tainted, depth):
            return False
    return True


def _reads(node: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in walk(node))


def _allowed_use(mctx, fctx, node: ast.Name, tainted: set[str], depth: int) -> bool:
    """One read of a value computed from a key: an argument of a JAX call, an
    operand, part of a returned or assigned container, a subscript base."""
    child: ast.AST = node
    parent = mctx.parent(node)
    while True:
        if isinstance(parent, (ast.BinOp, ast.UnaryOp)):
            child, parent = parent, mctx.parent(parent)
            continue
        if isinstance(parent, (ast.Tuple, ast.List, ast.Dict)) and not isinstance(getattr(parent, "ctx", None),
                                                                                 ast.Store):
            child, parent = parent, mctx.parent(parent)
            continue
        if isinstance(parent, ast.Subscript) and parent.value is child:
            child, parent = parent, mctx.parent(parent)
            continue
        if isinstance(parent, ast.Attribute) and parent.value is child and parent.attr in _ARRAY_ATTRIBUTES:
            child, parent = parent, mctx.parent(parent)
            continue
        if isinstance(parent, ast.Call) and parent.func is child:
            # `w.astype(d)`, `w.reshape(...)`: a method of the array
            child, parent = parent, mctx.parent(parent)
            continue
        break
    if isinstance(parent, (ast.Return, ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return True
    if isinstance(parent, ast.keyword):
        parent = mctx.parent(parent)
    if isinstance(parent, ast.Call) and parent.func is not child:
        q = fctx.imports.qualname(parent.func, fctx.shadowing) or ""
        if is_under(q, "jax.random", "jax.numpy", "jax.nn", "jax.lax", "jax.scipy"):
            return True
        found = _visible(mctx, fctx, parent.func)
        if found is None:
            return False
        callee, cmctx = found
        positions = []
        for i, a in enumerate(parent.args):
            if isinstance(a, ast.Starred):
                return False
            if _reads(a, tainted):
                if not (isinstance(a, ast.Name)):
                    return False
                positions.append((i, None))
        for k in parent.keywords:
            if k.arg is None:
                return False
            if _reads(k.value, tainted):
                if not isinstance(k.value, ast.Name):
                    return False
                positions.append((None, k.arg))
        params = _params_for(callee, positions)
        return params is not None and _key_only(cmctx, callee, params, depth + 1) and \
            _returns_arrays(cmctx, callee)
    return False


def _returns_arrays(mctx, fn) -> bool:
    from .kinds import function_result_kind

    return function_result_kind(mctx, fn).is_array_tree() is True
