"""What a ``for`` statement iterates over.

``parse_iteration`` matches the loop target against the iterable:
``range(...)``, ``reversed(...)``, ``enumerate(...)``, ``zip(...)`` and plain
sequences, and returns an :class:`Iteration` (or raises :class:`Decline`).
``static_int`` decides whether a trip-count expression is known at trace time.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional, Union

from .decline import Decline, short

STATIC_BUILTINS = {"len", "min", "max", "abs", "int", "round", "sum"}
STATIC_ATTRS = {"shape", "ndim", "size"}


@dataclass
class RangeSource:
    """``range(start, stop, step)`` bound to ``name`` (``None`` for a non-name target)."""

    node: ast.Call
    name: Optional[str]
    target: ast.AST
    start: Optional[ast.AST]
    stop: ast.AST
    step: Optional[ast.AST]

    def args(self) -> list[ast.AST]:
        return [a for a in (self.start, self.stop, self.step) if a is not None]


@dataclass
class ElementSource:
    """A sequence whose elements are bound to ``target``."""

    expr: ast.AST
    target: ast.AST


@dataclass
class EnumerateIndex:
    """The counter of ``enumerate(seq, start)`` bound to ``target``."""

    seq: ast.AST
    start: Optional[ast.AST]
    target: ast.AST


@dataclass
class TupleSource:
    """``zip(...)`` / ``enumerate(...)``: a tuple of sources bound to a tuple target
    (or to one name, which then receives the tuple)."""

    kind: str  # "zip" | "enumerate"
    parts: list
    target: ast.AST


Source = Union[RangeSource, ElementSource, EnumerateIndex, TupleSource]


@dataclass
class Iteration:
    source: Source
    reverse: bool = False
    range_loop: Optional[RangeSource] = None  # the loop is `for t in range(...)` directly
    leaves: list = field(default_factory=list)  # every RangeSource/ElementSource/EnumerateIndex


def _builtin_call(node: ast.AST, name: str, shadowed: set[str]) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
            and name not in shadowed)


def parse_iteration(loop: ast.For, shadowed: set[str], facts) -> Iteration:
    """``facts`` answers ``is_progress_bar(call)``/``qual(expr)`` questions."""
    it = loop.iter
    reverse = False
    if _builtin_call(it, "reversed", shadowed):
        if len(it.args) != 1 or it.keywords:
            raise Decline("L2S302", "`reversed(...)` takes exactly one argument here", it)
        inner = it.args[0]
        if _builtin_call(inner, "zip", shadowed) or _builtin_call(inner, "enumerate", shadowed):
            raise Decline("L2S302", "`reversed()` of `zip`/`enumerate` is not a valid Python sequence", inner)
        reverse = True
        it = inner
    source = _source(it, loop.target, shadowed, facts, top=True)
    iteration = Iteration(source, reverse)
    if isinstance(source, RangeSource):
        iteration.range_loop = source
    _collect_leaves(source, iteration.leaves)
    return iteration


def _collect_leaves(source, out: list) -> None:
    if isinstance(source, TupleSource):
        for p in source.parts:
            _collect_leaves(p, out)
    else:
        out.append(source)


def _source(it: ast.AST, target: ast.AST, shadowed: set[str], facts, top: bool = False) -> Source:
    if isinstance(target, ast.Starred) or (isinstance(target, (ast.Tuple, ast.List))
                                          and any(isinstance(e, ast.Starred) for e in target.elts)):
        raise Decline("L2S013", f"the starred loop target `{ast.unparse(target)}` is not supported; unpack "
                      "inside the body", target)
    if not isinstance(target, (ast.Name, ast.Tuple, ast.List)):
        raise Decline("L2S013", f"the loop assigns to `{ast.unparse(target)}`, not to a name", target)
    if isinstance(it, (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Constant, ast.JoinedStr)):
        raise Decline("L2S302", "the loop iterates over a literal sequence of separate Python values; "
                      "stack them into one array first (`jnp.stack([...])`)", it)
    if isinstance(it, (ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
        raise Decline("L2S302", "the loop iterates over a comprehension or generator; build the array first "
                      "(`jnp.stack([...])`) and iterate over it", it)
    if _builtin_call(it, "range", shadowed):
        if it.keywords or not 1 <= len(it.args) <= 3 or any(isinstance(a, ast.Starred) for a in it.args):
            raise Decline("L2S302", "unsupported `range(...)` arguments", it)
        if len(it.args) == 1:
            start, stop, step = None, it.args[0], None
        else:
            start, stop = it.args[0], it.args[1]
            step = it.args[2] if len(it.args) == 3 else None
        name = target.id if isinstance(target, ast.Name) else None
        if name is None:
            raise Decline("L2S013", "`range()` yields integers; it cannot be unpacked into several names", target)
        return RangeSource(it, name, target, start, stop, step)
    if _builtin_call(it, "zip", shadowed):
        if any(k.arg != "strict" for k in it.keywords) or any(isinstance(a, ast.Starred) for a in it.args) or not it.args:
            raise Decline("L2S302", "unsupported `zip(...)` arguments", it)
        if isinstance(target, ast.Name):
            parts = [_source(a, ast.Name(id="_", ctx=ast.Store()), shadowed, facts) for a in it.args]
        else:
            if len(target.elts) != len(it.args):
                raise Decline("L2S013", "the loop target does not match the `zip(...)` arguments", target)
            parts = [_source(a, t, shadowed, facts) for a, t in zip(it.args, target.elts)]
        for p in parts:
            if isinstance(p, RangeSource) and p.name is None:
                pass
        return TupleSource("zip", parts, target)
    if _builtin_call(it, "enumerate", shadowed):
        if len(it.args) not in (1, 2) or any(k.arg != "start" for k in it.keywords):
            raise Decline("L2S302", "unsupported `enumerate(...)` arguments", it)
        seq = it.args[0]
        start = it.args[1] if len(it.args) == 2 else (it.keywords[0].value if it.keywords else None)
        if isinstance(seq, ast.Call) and facts.is_progress_bar(seq):
            raise Decline("L2S201", "the loop iterates through a progress bar; drop it (a scan runs all steps at "
                          "once)", seq)
        if _builtin_call(seq, "reversed", shadowed) or _builtin_call(seq, "enumerate", shadowed) \
                or _builtin_call(seq, "range", shadowed):
            raise Decline("L2S302", f"`enumerate({ast.unparse(seq)})` is not supported; "
                          "iterate with an index over `range(...)` instead", seq)
        # the counter runs over len(seq); for zip(...) its first argument (scan checks that all agree)
        counted = seq.args[0] if _builtin_call(seq, "zip", shadowed) and seq.args else seq
        if not _simple_expr(counted):
            raise Decline("L2S302", f"`enumerate({short(ast.unparse(seq))})` over a computed expression; assign "
                          "it to a name first", seq)
        if isinstance(target, ast.Name):
            idx_t: ast.AST = ast.Name(id="_", ctx=ast.Store())
            elt_t: ast.AST = ast.Name(id="_", ctx=ast.Store())
        else:
            if len(target.elts) != 2:
                raise Decline("L2S013", "the loop target does not match `enumerate(...)`", target)
            idx_t, elt_t = target.elts
            if not isinstance(idx_t, ast.Name):
                raise Decline("L2S013", "the counter of `enumerate()` must be a plain name", idx_t)
        elem = _source(seq, elt_t, shadowed, facts)
        return TupleSource("enumerate", [EnumerateIndex(counted, start, idx_t), elem], target)
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id in (
            "reversed", "sorted", "map", "filter", "iter", "list", "tuple", "set", "dict", "frozenset") \
            and it.func.id not in shadowed:
        raise Decline("L2S302", f"the loop iterates over `{it.func.id}(...)`; "
                      "iterate over an array (or `range`, `zip`, `enumerate`) instead", it)
    if isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute) and it.func.attr in (
            "items", "keys", "values"):
        raise Decline("L2S302", f"the loop iterates over a dict (`.{it.func.attr}()`); "
                      "scan needs arrays stacked along one axis", it)
    if isinstance(it, ast.Call) and facts.is_progress_bar(it):
        raise Decline("L2S201", "the loop iterates through a progress bar; drop it (a scan runs all steps at once)", it)
    return ElementSource(it, target)


def _simple_expr(node: ast.AST) -> bool:
    """Names, attribute chains and constant subscripts: cheap and pure to evaluate twice."""
    while True:
        if isinstance(node, ast.Name):
            return True
        if isinstance(node, ast.Attribute):
            node = node.value
            continue
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            node = node.value
            continue
        return False


def invariant_simple_expr(node: ast.AST, changing: set[str]) -> bool:
    """A pure, loop-invariant array reference: ``xs``, ``self.inputs``, ``batch["x"]``."""
    if not _simple_expr(node):
        return False
    root = node
    while not isinstance(root, ast.Name):
        root = root.value
    return root.id not in changing


def static_int(expr: ast.AST, fctx, changing: set[str], depth: int = 0) -> Optional[ast.AST]:
    """``None`` when ``expr`` is static (a Python int at trace time); otherwise the
    offending sub-expression."""
    if depth > 8:
        return expr
    if isinstance(expr, ast.Constant):
        return None if isinstance(expr.value, (int, bool)) else expr
    if isinstance(expr, (ast.BinOp,)):
        if not isinstance(expr.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift)):
            return expr
        return static_int(expr.left, fctx, changing, depth + 1) or static_int(expr.right, fctx, changing, depth + 1)
    if isinstance(expr, ast.UnaryOp):
        return static_int(expr.operand, fctx, changing, depth + 1)
    if isinstance(expr, ast.Name):
        if expr.id in changing:
            return expr
        for d in fctx.assigned_values(expr.id):
            if isinstance(d, tuple):
                value = d[0]
                if isinstance(value, ast.Attribute) and value.attr == "shape":
                    continue
                if static_int(value, fctx, changing, depth + 1) is not None:
                    return expr
            elif static_int(d, fctx, changing, depth + 1) is not None:
                return expr
        return None  # parameters, module constants, loop counters: Python values at trace time
    if isinstance(expr, ast.Attribute):
        if expr.attr in STATIC_ATTRS:
            return None
        # config.num_layers, self.n_steps: attributes of Python objects
        root = expr
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and root.id in changing:
            return expr
        return None if isinstance(root, ast.Name) else expr
    if isinstance(expr, ast.Subscript):
        if isinstance(expr.value, ast.Attribute) and expr.value.attr == "shape":
            return static_int(expr.slice, fctx, changing, depth + 1)
        base = expr.value
        if isinstance(base, ast.Name) and base.id not in changing:
            d = fctx.single_defs.get(base.id)
            if d is not None and not isinstance(d, tuple) and isinstance(d, ast.Attribute) and d.attr == "shape":
                return static_int(expr.slice, fctx, changing, depth + 1)
        return expr
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in STATIC_BUILTINS:
        if expr.func.id == "len":
            return None
        for a in list(expr.args) + [k.value for k in expr.keywords]:
            bad = static_int(a, fctx, changing, depth + 1)
            if bad is not None:
                return bad
        return None
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr in ("size", "dim") \
            and not expr.keywords and len(expr.args) <= 1:
        # torch's `x.size(1)`, `x.dim()`: static metadata of a tensor
        return static_int(expr.args[0], fctx, changing, depth + 1) if expr.args else None
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        q = fctx.imports.qualname(expr.func)
        if q in ("math.ceil", "math.floor", "math.prod"):
            for a in expr.args:
                bad = static_int(a, fctx, changing, depth + 1)
                if bad is not None:
                    return bad
            return None
    return expr
