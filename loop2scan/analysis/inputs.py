"""Per-step inputs of a loop: what the scan scans, its trip count and direction.

``for t in range(a, b, s)`` reads ``x[t + c]`` become slices of ``x`` when that is
provably the same sequence of rows; any other use of ``t`` scans the index
values.  Element loops scan their sequences (mirroring the loop target).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Optional

from ..naming import fresh_name
from ..plan import Bound, Counter, LoopResult, XsItem, is_atomic
from .activity import all_read_names, full_slice, header_effects, int_literal, walk_all
from .checks import iteration as iteration_checks
from .context import ModuleContext
from .decline import advice, Decline
from .kinds import NUMPY
from .iteration import (
    ElementSource,
    EnumerateIndex,
    Iteration,
    RangeSource,
    TupleSource,
    invariant_simple_expr,
)
from .outputs import Accumulator, index_offset
from .symbolic import Lin, length_atom, to_lin
from .nodes import walk


@dataclass
class _IndexUse:
    node: ast.Name
    kind: str  # "slice-candidate" | "at" | "generic"
    base: Optional[ast.AST] = None
    subscript: Optional[ast.Subscript] = None
    axis: int = 0
    offset: int = 0
    drop: Optional[int] = None  # keep the other index parts, dropping this one (None: replace the whole read)


def plan_inputs(la) -> None:
    """Per-step inputs (``la.xs`` and how they nest, ``la.xs_tree``), the trip
    count when it must be given (``la.length``), the direction (``la.reverse``),
    then the per-step values the step function sees are known to be arrays."""
    iteration, accs = la.iteration, la.accs
    la.length, la.length_reason, la.reverse = None, "", iteration.reverse
    la.counter = None
    r = iteration.range_loop
    if r is not None:
        la.xs, la.length, la.reverse, la.length_reason, la.index_info = _range_inputs(la, r, accs, la.reverse)
        la.xs_tree = list(range(len(la.xs))) if len(la.xs) != 1 else 0
        bind_aliases(la, la.xs)
    else:
        # element loops: sources mirror the target
        source = iteration.source
        counter = enumerate_counter(iteration)
        la.elements_target = la.loop.target
        if counter is not None:
            # the counter is carried (weakly typed, like the int it was) or, when it only
            # places `.at[i].set` outputs, which are written after the scan, not needed at all
            uses = [u for u in index_uses(la, counter.target.id, accs) if u.kind != "at"]
            for use in uses:
                if use.kind == "slice-candidate":
                    _check_traced_index(la, use)  # the counter stays an index into the array
            if any(not _inside_index(la, u.node) for u in uses):
                start = la.mctx.source(counter.start) if counter.start is not None else "0"
                la.counter = Counter(counter.target.id, start, 1)
            if not uses or la.counter is not None:
                source = source.parts[1]
                la.elements_target = source.target
        la.xs = []
        la.xs_tree = _element_items(la, source, la.xs)
        la.index_info = _enumerate_info(la, iteration)
    la.learn_step_arrays(la.xs)


def index_uses(la, index: str, accs: dict[str, Accumulator]) -> list[_IndexUse]:
    at_nodes = set()
    for acc in accs.values():
        if acc.kind == "at_set":
            at_nodes.update(id(n) for n in walk(acc.stmt.value.func.value.slice))
    uses: list[_IndexUse] = []
    changing = la.written | la.targets
    for node in walk_all(la.loop.body):
        if not (isinstance(node, ast.Name) and node.id == index and isinstance(node.ctx, ast.Load)):
            continue
        if id(node) in at_nodes:
            uses.append(_IndexUse(node, "at"))
            continue
        parent = la.mctx.parent(node)
        expr: ast.AST = node
        if isinstance(parent, ast.BinOp) and index_offset(parent, index) is not None:
            expr = parent
            parent = la.mctx.parent(parent)
        if isinstance(parent, ast.Slice):
            raise Decline("L2S307", f"the loop index `{index}` bounds a slice (`{ast.unparse(parent)}`); inside "
                          "a scan it is traced, so the slice would not have a static size "
                          "(use `jax.lax.dynamic_slice`)", node)
        if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "range":
            raise Decline("L2S307", f"the loop index `{index}` is used as a trip count (`{ast.unparse(parent)}`)",
                          node)
        sub = None
        parts: list[ast.AST] = []
        pos = -1
        if isinstance(parent, ast.Subscript) and parent.slice is expr:
            sub, parts, pos = parent, [expr], 0
        elif isinstance(parent, ast.Tuple) and isinstance(la.mctx.parent(parent), ast.Subscript) \
                and la.mctx.parent(parent).slice is parent:
            sub = la.mctx.parent(parent)
            parts = list(parent.elts)
            pos = next(i for i, e in enumerate(parts) if e is expr)
        if sub is not None and isinstance(sub.ctx, ast.Load):
            offset = index_offset(expr, index)
            base = sub.value
            if la.layer is None or not (isinstance(base, ast.Name) and base.id == la.layer.name):
                iteration_checks.check_sequence(la, base, "indexes")
            axis = _slice_axis(parts, pos)
            if axis is not None and invariant_simple_expr(base, changing) \
                    and not (isinstance(base, ast.Attribute) and base.attr == "at"):
                bare = all(full_slice(p) or (i == 0 and _is_ellipsis(p)) for i, p in enumerate(parts) if i != pos)
                uses.append(_IndexUse(node, "slice-candidate", base, sub, axis, offset,
                                      None if bare else pos))
                continue
            if not la.array_at_loop(base):
                raise Decline("L2S307", f"`{ast.unparse(sub)}` indexes `{ast.unparse(base)}`, which may be a "
                              "Python list, with the loop index; inside a scan the index is traced "
                              f"({advice(la, 'make it an array with `jnp.asarray`', 'make it a tensor with `torch.stack`')} before the loop)", sub)
        uses.append(_IndexUse(node, "generic"))
    return uses


def _slice_axis(parts: list[ast.AST], pos: int) -> Optional[int]:
    """The axis ``x[parts]`` indexes with ``parts[pos]``, when ``x[parts]`` equals
    ``moveaxis(x, axis, 0)[index][parts without pos]`` (numpy indexing rules:
    only full slices, or a leading ``...``, before the index; after it, basic
    indices, or any indices when nothing comes before and no slice follows)."""
    before, after = parts[:pos], parts[pos + 1:]
    ellipsis = bool(before) and _is_ellipsis(before[0])
    if not all(full_slice(p) for p in (before[1:] if ellipsis else before)):
        return None
    basic = all(_basic_index(p) for p in after)
    if ellipsis:
        return -(len(after) + 1) if basic else None
    if basic or (pos == 0 and not any(isinstance(p, ast.Slice) for p in after)
                 and not any(isinstance(p, ast.Constant) and p.value in (None, Ellipsis) for p in after)
                 and not any(isinstance(p, ast.Starred) for p in after)):
        return pos
    return None


def enumerate_counter(iteration: Iteration) -> Optional[EnumerateIndex]:
    """The counter of a top-level ``for i, x in enumerate(seq[, start])``."""
    src = iteration.source
    if isinstance(src, TupleSource) and src.kind == "enumerate" and isinstance(src.parts[0].target, ast.Name):
        return src.parts[0]
    return None


def counter_name(la, iteration: Iteration) -> Optional[str]:
    """The integer counter that ``.at[i].set`` outputs may be indexed with."""
    if iteration.range_loop is not None:
        return iteration.range_loop.name
    counter = enumerate_counter(iteration)
    return counter.target.id if counter is not None else None


def _enumerate_info(la, iteration: Iteration):
    """``enumerate(seq, a)`` counts like ``range(a, a + len(seq))``."""
    counter = enumerate_counter(iteration)
    if counter is None:
        return None
    lo = _lin(la, counter.start, 0)
    seq = la.mctx.source(counter.seq)
    hi = lo + Lin.atom(length_atom(counter.seq, 0), f"len({seq})") if lo is not None else None
    return {"lo": lo, "hi": hi, "step": 1, "sliceable": lo is not None,
            "arange_args": _enumerate_range_args(la, counter)}


def _enumerate_range_args(la, counter: EnumerateIndex) -> list[str]:
    seq = la.mctx.source(counter.seq)
    if counter.start is None:
        return [f"len({seq})"]
    start = la.mctx.source(counter.start)
    return [start, f"{start} + len({seq})" if _atomic_text(start) else f"({start}) + len({seq})"]


def _element_items(la, source, xs: list[XsItem]):
    """Per-step inputs of an element loop, mirroring the target's structure;
    returns that structure as nested lists of indices into ``xs``."""
    mctx = la.mctx
    if isinstance(source, TupleSource):
        return [_element_items(la, p, xs) for p in source.parts]
    target = source.target
    bind = mctx.source(target) if hasattr(target, "lineno") else "_"
    if isinstance(source, ElementSource) and la.layer is not None:
        xs.append(XsItem("layers", bind, mctx.span(source.expr), la.layer.name, 0,
                         layer_slice=la.layer.part, layout=la.layer.mode))
    elif isinstance(source, ElementSource):
        xs.append(XsItem("elements", bind, mctx.span(source.expr), mctx.source(source.expr), 0,
                         wrap_asarray=not la.array_at_loop(source.expr)))
    elif isinstance(source, EnumerateIndex):
        xs.append(XsItem("arange", bind, None, "", 0, range_args=_enumerate_range_args(la, source)))
    elif isinstance(source, RangeSource):
        xs.append(XsItem("arange", bind, None, "", 0, range_args=[mctx.source(a) for a in source.args()]))
    return len(xs) - 1


def _range_inputs(la, r: RangeSource, accs, reverse: bool):
    """``for t in range(a, b, s)``: index reads ``x[t + c]`` become slices of
    ``x`` when that is provably the same sequence of rows; any other use of
    ``t`` scans the index values themselves.

    Everything is expressed over the ascending range ``lo:hi:step`` (a
    ``range(hi - 1, lo - 1, -1)`` loop is that range processed in reverse),
    so slices, the index array and ``.at[...]`` writes line up with the
    per-step outputs, which a scan returns in index order."""
    mctx = la.mctx
    index = r.name
    uses = index_uses(la, index, accs)
    step = int_literal(r.step) if r.step is not None else 1
    start = _lin(la, r.start, 0)
    stop = _lin(la, r.stop, 0)
    original_args = ([mctx.source(r.start)] if r.start is not None else []) + [mctx.source(r.stop)]
    if r.step is not None:
        original_args.append(mctx.source(r.step))
    sliceable = start is not None and stop is not None and (step > 0 or step == -1)
    if sliceable:
        if step > 0:
            lo, hi, s, scan_reverse = start, stop, step, reverse
            ascending_args = original_args
        else:
            lo, hi, s, scan_reverse = stop.shift(1), start.shift(1), 1, not reverse
            ascending_args = [hi.render()] if lo.is_const and lo.const == 0 else [lo.render(), hi.render()]
    else:
        lo = hi = None
        s, scan_reverse, ascending_args = step, reverse, original_args
    slices: dict[tuple, XsItem] = {}
    in_bounds: dict[tuple, bool] = {}
    generic = arithmetic = False
    for use in uses:
        if use.kind == "at":
            continue
        if use.kind == "slice-candidate" and sliceable:
            first, end = lo.shift(use.offset), hi.shift(use.offset)
            if first.nonnegative():
                key = (ast.unparse(use.base), use.axis, use.offset)
                item = slices.get(key)
                if item is None:
                    base_len = Lin.atom(length_atom(use.base, use.axis), "")
                    # `x[:len(x) - 1]` is right even when x is empty (`x[:-1]` of an empty array is
                    # empty too); that holds down to `len(x) - 2`, not below.
                    own = base_len is not None and end.terms == base_len.terms and end.const >= -2
                    # a stop such as `len(x) - 3` is clamped at 0: `range` then runs no step, while
                    # the slice `x[:-1]` would wrap around
                    clamp = not own and end.may_go_negative()
                    in_bounds[key] = base_len is not None and end.le(base_len) and (
                        end.nonnegative() or own or clamp)
                    full = base_len is not None and in_bounds[key] and base_len.le(end)
                    stop_text = f"max({end.render()}, 0)" if clamp else end.render()
                    item = slices[key] = XsItem(
                        "slice", "", mctx.span(use.base), mctx.source(use.base), use.axis,
                        start=None if first.is_const and first.const == 0 else Bound(first.render()),
                        stop=Bound(stop_text), step=s, stop_is_full=full,
                        wrap_asarray=not la.array_at_loop(use.base),
                    )
                item.replaces.append(mctx.span(use.subscript))
                item.replace_drop.append(use.drop)
                continue
        if use.kind == "slice-candidate" and not la.array_at_loop(use.base):
            raise Decline("L2S307", f"`{ast.unparse(use.subscript)}` indexes `{ast.unparse(use.base)}`, which "
                          "may be a Python list, with the loop index; inside a scan the index is traced "
                          f"({advice(la, 'make it an array with `jnp.asarray`', 'make it a tensor with `torch.stack`')} before the loop)", use.subscript)
        if use.kind == "slice-candidate":
            _check_traced_index(la, use)
        generic = True
        arithmetic = arithmetic or not _inside_index(la, use.node)
    xs: list[XsItem] = []
    reserved = set(la.fctx.all_names) | la.mctx.module_names | all_read_names(la.loop.body)
    for (_, _, off), item in sorted(slices.items(), key=lambda kv: min(kv[1].replaces)):
        suffix = "" if off == 0 else "_next" if off == 1 else "_prev" if off == -1 else \
            f"_{'p' if off > 0 else 'm'}{abs(off)}"
        item.bind = fresh_name(f"{_base_name(item.source_text)}_{index}{suffix}", reserved)
        xs.append(item)
    if la.layer is not None:
        if generic:
            raise Decline("L2S309", f"the layer index `{index}` is used for more than `{la.layer.name}[{index}]`"
                          "; with stacked layers only the per-layer parameters are scanned", la.loop)
        for item in xs:
            if item.source_text == la.layer.name and item.axis == 0:
                item.kind, item.layout, item.layer_slice = "layers", la.layer.mode, None
                item.start = item.stop = None
    if generic:
        # an index that only indexes arrays is scanned (`jnp.arange`); one that reaches
        # arithmetic is carried, so that it stays weakly typed like the loop's int
        la.counter = _counter(la, r, start, stop, step) if arithmetic else None
        if la.counter is None:
            xs.append(XsItem("arange", index, None, "", 0, range_args=list(ascending_args)))
    length = None
    reason = ""
    if not xs:
        length = _trip_text(la, r, start, stop, step)
        reason = "no per-step inputs"
    elif slices and not (generic and la.counter is None) and not any(in_bounds.values()):
        length = _trip_text(la, r, start, stop, step)
        reason = ("the slices equal the loop's reads only when the arrays are long enough; `length=` makes "
                  "the scan raise instead of silently running a different number of steps")
    index_info = {"lo": lo, "hi": hi, "step": s, "sliceable": sliceable, "arange_args": ascending_args}
    return xs, length, scan_reverse, reason, index_info


def _check_traced_index(la, use: _IndexUse) -> None:
    """An array indexed with the traced index inside the scan must be a JAX
    array: a NumPy array cannot be indexed with a traced value."""
    kind = la.facts.kind(use.base, lambda n: la.fctx.defs_before(la.loop, n) or None)
    if kind.tag == NUMPY or kind.numpy_possible:
        what = kind.why or "a NumPy array"
        raise Decline("L2S307", f"`{ast.unparse(use.subscript)}` indexes `{ast.unparse(use.base)}` ({what}) with the "
                      "loop index, which a scan traces: a NumPy array cannot be indexed with a traced value "
                      "(convert it with `jnp.asarray` before the loop)", use.subscript)


def _inside_index(la, node: ast.AST) -> bool:
    """``node`` is part of the index of a subscript (``x[t]``, ``x[t + 1, :]``)."""
    cur = node
    for parent in la.mctx.ancestors(node):
        if isinstance(parent, ast.Subscript) and parent.slice is cur:
            return True
        if isinstance(parent, (ast.stmt, ast.Call)):
            return False
        cur = parent
    return False


def _counter(la, r: RangeSource, start: Optional[Lin], stop: Optional[Lin], step: int) -> Optional[Counter]:
    """The index as a carried counter, in the loop's own order: from the first
    value the loop takes, by its step (``None`` when that first value cannot be
    written simply: ``reversed(range(a, b, s))`` with ``s != 1``)."""
    if not la.iteration.reverse:
        init = la.mctx.source(r.start) if r.start is not None else "0"
        return Counter(r.name, init, step)
    if step != 1:
        return None
    last = stop.shift(-1).render() if stop is not None else f"({la.mctx.source(r.stop)}) - 1"
    return Counter(r.name, last, -1)


def _trip_text(la, r: RangeSource, start: Optional[Lin], stop: Optional[Lin], step: int) -> str:
    """The number of steps of ``range(...)`` as a scan ``length``: the count
    itself where it is certainly not negative, else ``max(count, 0)`` (``range``
    runs no step for a negative count, while a scan of a negative length with
    outputs raises)."""
    mctx = la.mctx
    consts = [int_literal(a) for a in r.args()]
    if all(c is not None for c in consts) and (len(consts) < 3 or consts[2] != 0):
        return str(len(range(*consts)))
    if step in (1, -1) and start is not None and stop is not None:
        diff = stop - start if step == 1 else start - stop
        text = mctx.source(r.stop) if step == 1 and r.start is None else diff.render()
        return text if diff.nonnegative() else f"max({text}, 0)"
    if step in (1, -1):
        # bounds the linear forms do not cover (`self.n_steps`, `cfg.steps - 1`)
        first, end = (r.start, r.stop) if step == 1 else (r.stop, r.start)
        end_text = mctx.source(end)
        if first is None or int_literal(first) == 0:
            return end_text if _nonnegative_text(end) else f"max({end_text}, 0)"
        left = end_text if is_atomic(end_text) else f"({end_text})"
        first_text = mctx.source(first)
        right = first_text if is_atomic(first_text) else f"({first_text})"
        return f"max({left} - {right}, 0)"
    args = ", ".join(mctx.source(a) for a in r.args())
    return f"len(range({args}))"


def _nonnegative_text(expr: ast.AST) -> bool:
    """``expr`` is certainly a non-negative integer: ``len(x)``, ``x.shape[k]``,
    ``x.size``, ``x.ndim``, a non-negative literal."""
    if int_literal(expr) is not None:
        return int_literal(expr) >= 0
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "len" \
            and len(expr.args) == 1 and not expr.keywords:
        return True
    if isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Attribute) and expr.value.attr == "shape" \
            and int_literal(expr.slice) is not None:
        return True
    return isinstance(expr, ast.Attribute) and expr.attr in ("size", "ndim")


def bind_aliases(la, xs: list[XsItem]) -> None:
    """A body statement ``x_t = xs[t]`` that only names a per-step read: the
    step binds the input to ``x_t`` itself and the statement goes (no
    ``x_t = xs_t`` left in the step).  Only where ``x_t`` is a plain name bound
    nowhere else in the body, not carried, not read after the loop, and not
    used anywhere else in the function."""
    mctx = la.mctx
    taken = {x.bind for x in xs}
    writes: dict[str, int] = {}
    for stmt in la.body_statements():
        for n in header_effects(stmt).writes:
            writes[n] = writes.get(n, 0) + 1
    outside = {n.id for n in walk(la.func) if isinstance(n, ast.Name) and not la.inside_loop(n)}
    outside |= set(la.fctx.params)
    for item in xs:
        if item.kind not in ("slice", "layers") or not item.replaces:
            continue
        for stmt in la.loop.body:
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                    and isinstance(stmt.value, ast.Subscript)):
                continue
            span = mctx.span(stmt.value)
            if span not in item.replaces:
                continue
            k = item.replaces.index(span)
            drops = item.replace_drop or [None] * len(item.replaces)
            name = stmt.targets[0].id
            if drops[k] is not None or writes.get(name, 0) != 1 or name in taken or name in outside \
                    or name in la.carries or name in la.last_values or name in la.live_out or name in la.accs \
                    or name in la.targets or name in mctx.module_names:
                continue
            item.bind = name
            item.drop.append(mctx.span(stmt))
            del item.replaces[k]
            if item.replace_drop:
                del item.replace_drop[k]
            taken.add(name)
            break


def elements_pattern(la, iteration: Iteration, xs: list[XsItem]) -> str:
    if iteration.range_loop is not None:
        return ", ".join(x.bind for x in xs)
    return la.mctx.source(la.elements_target)


def _resolve(la, name: str):
    """Definition of a stable local name for symbolic bounds."""
    fctx = la.fctx
    d = fctx.single_defs.get(name)
    if d is None:
        return None
    value = d[0] if isinstance(d, tuple) else d
    roots = [n.id for n in walk(value) if isinstance(n, ast.Name)]
    for r in roots:
        if r in la.written or r in la.targets:
            return None
        if r in fctx.params and r in fctx.locals - set(fctx.params):
            return None
        if r in fctx.locals and r not in fctx.params and r not in fctx.single_defs:
            return None
    return d


def _lin(la, expr: Optional[ast.AST], default: int) -> Optional[Lin]:
    if expr is None:
        return Lin.constant(default)
    return to_lin(expr, lambda name: _resolve(la, name))


def _is_ellipsis(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is Ellipsis


def _basic_index(node: ast.AST) -> bool:
    """An index that consumes exactly one axis and never triggers advanced indexing."""
    if isinstance(node, ast.Slice):
        return all(b is None or int_literal(b) is not None for b in (node.lower, node.upper, node.step))
    return int_literal(node) is not None


def _atomic_text(text: str) -> bool:
    return re.fullmatch(r"[\w.]+", text) is not None


def _base_name(text: str) -> str:
    m = re.findall(r"[^\W\d]\w*", text)
    strings = re.findall(r"['\"]([^\W\d]\w*)['\"]\]$", text)
    if strings:
        return strings[-1]
    if not m:
        return "x"
    name = m[-1]
    return name


def inputs_of_enclosing_steps(mctx: ModuleContext, results: list[LoopResult]) -> None:
    """An inner loop over a per-step input of a rewritten outer loop iterates an
    array slice: it needs no ``jnp.asarray``."""
    by_loop = {id(loop): r for loop, r in zip(mctx.loops, results)}
    for loop, r in zip(mctx.loops, results):
        if r.plan is None:
            continue
        for item in r.plan.xs:
            if not (item.wrap_asarray and item.source_text.isidentifier()):
                continue
            for anc in mctx.ancestors(loop):
                outer = by_loop.get(id(anc))
                if outer is None or outer.plan is None:
                    continue
                if any(x.bind == item.source_text and x.bind.isidentifier() for x in outer.plan.xs):
                    item.wrap_asarray = False
                    break
