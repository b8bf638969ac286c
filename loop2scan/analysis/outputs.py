"""Per-step outputs: list and tuple accumulators, and preallocated buffers.

Recognised forms (design notes, section 2):

* ``outs = []`` right before the loop, ``outs.append(v)`` once per step, and
  after the loop only ``jnp.stack(outs[, axis])``, ``jnp.array(outs)``,
  ``jnp.asarray(outs)``, ``jnp.concatenate(outs, ...)`` (and the other
  ``jnp`` functions that take a sequence of arrays), ``len(outs)``,
  ``outs[i]``, each possibly on ``outs[::-1]``;
* the same with a tuple: ``acc = ()`` and ``acc += (v,)``;
* ``out = out.at[..., t + c, ...].set(v)`` into an array bound before the loop;
* for targets that ask for it (loops over torch layers): a tuple that grows by
  one item per step, ``acc = acc + (v,)`` or ``acc += (v,)``, possibly as the
  only statement of an ``if`` on a flag (the Hugging Face
  ``if output_hidden_states: all_hidden_states += (h,)``).  The tuple keeps its
  type and items, so its value before the loop and its uses after it are
  free; the flag is checked by the target's rules.

Anything else that touches the accumulator is declined with the use named.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from ..plan import Consumer, YsItem
from .activity import all_written_names, full_slice, header_effects, int_literal, reads, walk_body, walk_scope
from .decline import Decline, advice, position, short
from .kinds import UNKNOWN, _rank
from .nodes import walk

STACK_FUNCS = {"jax.numpy.stack", "torch.stack"}  # the axis keyword: `axis`, torch's `dim`
ARRAY_FUNCS = {"jax.numpy.array", "jax.numpy.asarray"}
SEQUENCE_FUNCS = {
    "jax.numpy.concatenate", "jax.numpy.vstack", "jax.numpy.hstack", "jax.numpy.dstack",
    "jax.numpy.column_stack", "jax.numpy.row_stack", "jax.numpy.concat",
}


@dataclass
class ConsumerUse:
    node: ast.AST  # the whole consumer expression (replaced by the emitter)
    kind: str  # stack | array | sequence | len | index | tree-stack
    axis: int = 0
    flipped: bool = False
    arg: Optional[ast.AST] = None  # `outs` or `outs[::-1]` inside the consumer
    index: int = 0


@dataclass
class Accumulator:
    kind: str  # "list" | "tuple" | "at_set" | "extend"
    name: str
    stmt: ast.stmt
    value: ast.AST
    init: Optional[ast.stmt] = None
    consumers: list[ConsumerUse] = field(default_factory=list)
    # at_set only
    index_parts: list[ast.AST] = field(default_factory=list)
    index_pos: int = 0
    offset: int = 0
    # extend only: the `if` whose only statement `stmt` is
    guard: Optional[ast.If] = None

    @property
    def index_axis(self) -> int:
        """The axis the loop index writes: its position, counted from the end
        after a leading ``...`` (``out.at[..., t]`` writes axis -1)."""
        parts = self.index_parts
        if parts and isinstance(parts[0], ast.Constant) and parts[0].value is Ellipsis:
            n_after = len(self.stmt.value.func.value.slice.elts) - self.index_pos - 1 \
                if isinstance(self.stmt.value.func.value.slice, ast.Tuple) else 0
            return -(n_after + 1)
        return self.index_pos


def _is_reverse_slice(node: ast.AST) -> bool:
    return (isinstance(node, ast.Slice) and node.lower is None and node.upper is None
            and isinstance(node.step, ast.UnaryOp) and isinstance(node.step.op, ast.USub)
            and isinstance(node.step.operand, ast.Constant) and node.step.operand.value == 1)


def index_offset(node: ast.AST, index: str) -> Optional[int]:
    """``t`` -> 0, ``t + 2`` -> 2, ``t - 1`` -> -1, ``1 + t`` -> 1; else ``None``."""
    if isinstance(node, ast.Name) and node.id == index:
        return 0
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        if isinstance(node.left, ast.Name) and node.left.id == index:
            c = int_literal(node.right)
            if c is not None:
                return c if isinstance(node.op, ast.Add) else -c
        if isinstance(node.op, ast.Add) and isinstance(node.right, ast.Name) and node.right.id == index:
            return int_literal(node.left)
    return None


class OutputAnalysis:
    """Finds the accumulators of one loop (``ctx`` is the loop analysis)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.fctx = ctx.fctx
        self.mctx = ctx.mctx
        self.tuple_inits: dict[int, tuple] = {}

    # -- helpers ---------------------------------------------------------
    def _refs_in_body(self, name: str) -> list[ast.Name]:
        out = []
        for stmt in self.loop.body:
            for node in walk(stmt):  # nested scopes included: any reference counts
                if isinstance(node, ast.Name) and node.id == name:
                    out.append(node)
        return out

    def _stmt_of(self, node: ast.AST) -> ast.stmt:
        cur = node
        while not isinstance(cur, ast.stmt):
            cur = self.mctx.parent(cur)
        return cur

    def _check_top_level(self, stmt: ast.stmt, name: str, what: str) -> None:
        if not any(s is stmt for s in self.loop.body):
            raise Decline("L2S501", f"`{what}` runs conditionally or inside a nested block, so the number of "
                          f"items in `{name}` could differ from the number of steps", stmt)

    def _check_init(self, name: str, empty_kind: str) -> ast.stmt:
        defs = self.fctx.defs_before(self.loop, name)
        init = next(iter(defs)) if len(defs) == 1 else None
        empty = "[]" if empty_kind == "list" else "()"
        ok = init is not None and init.kind == "assign" and isinstance(init.node, ast.Assign) \
            and len(init.node.targets) == 1 and self._init_value(init.node, name, empty_kind)
        if not ok:
            where = init.node if init is not None and init.node is not None and init.kind != "undef" else self.loop
            raise Decline("L2S502", f"`{name}` must be `{name} = {empty}` right before the loop "
                          f"(it may hold other values when the loop starts)", where)
        block, idx = self.mctx.block_of(self.loop)
        iblock, iidx = self.mctx.block_of(init.node)
        if block is None or iblock is not block or iidx >= idx:
            raise Decline("L2S502", f"`{name} = {empty}` must be in the same block as the loop, before it",
                          init.node)
        for between in block[iidx + 1:idx]:
            for node in walk(between):
                if isinstance(node, ast.Name) and node.id == name:
                    raise Decline("L2S502", f"`{name}` is used between `{name} = {empty}` and the loop", between)
        return init.node

    def _init_value(self, stmt: ast.Assign, name: str, kind: str) -> bool:
        """``name = []`` or ``a, name = x, []`` (then every name of the statement
        must be an accumulator of this loop: the whole statement is removed)."""
        target = stmt.targets[0]
        if isinstance(target, ast.Name):
            return self._is_empty(stmt.value, kind)
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(stmt.value, (ast.Tuple, ast.List)) \
                and len(target.elts) == len(stmt.value.elts) \
                and all(isinstance(e, ast.Name) for e in target.elts):
            for t, v in zip(target.elts, stmt.value.elts):
                if t.id == name:
                    if not self._is_empty(v, kind):
                        return False
                    self.tuple_inits.setdefault(id(stmt), (stmt, [e.id for e in target.elts]))
                    return True
        return False

    def _is_empty(self, value: ast.AST, kind: str) -> bool:
        if kind == "list":
            if isinstance(value, ast.List) and not value.elts:
                return True
            return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "list"
                    and not value.args and not value.keywords)
        if isinstance(value, ast.Tuple) and not value.elts:
            return True
        return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "tuple"
                and not value.args and not value.keywords)

    def _consumers(self, name: str, init: ast.stmt, acc_stmt: ast.stmt) -> list[ConsumerUse]:
        if name in self.fctx.captured:
            raise Decline("L2S501", f"`{name}` is used by a nested function", self.fctx.captured[name][0])
        body_nodes = {id(n) for s in self.loop.body for n in walk(s)}
        init_def = next(iter(self.fctx.defs_before(self.loop, name)))
        out: list[ConsumerUse] = []
        for node in walk_body(self.fctx.func):
            if not (isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)):
                continue
            if id(node) in body_nodes:
                continue
            stmt = self._stmt_of(node)
            defs = self.fctx.defs_before(stmt, name)
            ours = {d for d in defs if d is init_def or d.node is acc_stmt}
            if not ours:
                continue
            if ours != set(defs):
                raise Decline("L2S501", f"`{name}` may be the list built by the loop or another value at "
                              f"line {stmt.lineno}", stmt)
            out.append(self._consumer(node, name))
        return out

    def _consumer(self, node: ast.Name, name: str) -> ConsumerUse:
        p = self.mctx.parent(node)
        arg: ast.AST = node
        flipped = False
        if isinstance(p, ast.Subscript) and p.value is node and _is_reverse_slice(p.slice):
            flipped = True
            arg = p
            p = self.mctx.parent(p)
        if isinstance(p, ast.Call) and p.args and p.args[0] is arg and not any(
                isinstance(a, ast.Starred) for a in p.args):
            q = self.ctx.facts.qual(p.func)
            kwargs = {k.arg: k.value for k in p.keywords}
            if q in STACK_FUNCS:
                axis_node = kwargs.pop("dim" if q == "torch.stack" else "axis", None)
                if len(p.args) == 2 and axis_node is None:
                    axis_node = p.args[1]
                elif len(p.args) > 2:
                    axis_node = None
                if not kwargs and len(p.args) <= 2:
                    axis = 0 if axis_node is None else int_literal(axis_node)
                    if axis is not None:
                        return ConsumerUse(p, "stack", axis, flipped, arg)
            elif q in ARRAY_FUNCS and len(p.args) == 1 and not kwargs:
                return ConsumerUse(p, "array", 0, flipped, arg)
            elif q in SEQUENCE_FUNCS:
                return ConsumerUse(p, "sequence", 0, flipped, arg)
            elif (isinstance(p.func, ast.Name) and p.func.id == "len" and len(p.args) == 1 and not kwargs
                  and "len" not in self.fctx.locals):
                return ConsumerUse(p, "len", 0, flipped, arg)
        tree_axis = self._tree_stack(p, arg)
        if tree_axis is not None:
            call = self.mctx.parent(p)
            return ConsumerUse(call, "tree-stack", tree_axis, flipped, arg)
        if (not flipped and isinstance(p, ast.Subscript) and p.value is node and isinstance(p.ctx, ast.Load)
                and int_literal(p.slice) is not None):
            return ConsumerUse(p, "index", 0, False, node, int_literal(p.slice))
        stmt = self._stmt_of(node)
        if isinstance(p, ast.Return) and self.mctx.layout == "stacked" and self.mctx.parent(self.fctx.func) \
                is self.mctx.tree:
            builder = self.mctx.layers.builder_of(self.fctx.func)
            if builder is not None and builder.list_name == name and builder.problem is None:
                raise Decline("L2S501", f"this loop builds the per-layer list `{name}` that "
                              f"`{self.fctx.func.name}` returns; it runs once, at initialisation, and stays a loop "
                              "(the list is stacked once where it is returned)", node)
        text = self.mctx.source(p if isinstance(p, ast.expr) else node)
        if len(text) > 60:
            text = text[:57] + "..."
        raise Decline("L2S501", f"`{name}` is used as a Python sequence after the loop "
                      f"(`{text}`, line {stmt.lineno}); after the rewrite it would be one stacked "
                      + advice(self.ctx, "array", "tensor"), node)

    def _tree_stack(self, starred: ast.AST, arg: ast.AST) -> Optional[int]:
        """``jax.tree.map(lambda *xs: jnp.stack(xs[, axis=k]), *outs)``: the stacking
        of a list of pytrees, leaf by leaf; returns ``k``."""
        if not (isinstance(starred, ast.Starred) and starred.value is arg):
            return None
        call = self.mctx.parent(starred)
        if not (isinstance(call, ast.Call) and len(call.args) == 2 and call.args[1] is starred
                and not call.keywords):
            return None
        if self.ctx.facts.qual(call.func) not in ("jax.tree.map", "jax.tree_util.tree_map", "jax.tree_map"):
            return None
        fn = call.args[0]
        if not (isinstance(fn, ast.Lambda) and fn.args.vararg is not None and not fn.args.args
                and not fn.args.posonlyargs and not fn.args.kwonlyargs):
            return None
        body, var = fn.body, fn.args.vararg.arg
        if not (isinstance(body, ast.Call) and self.ctx.facts.qual(body.func) in STACK_FUNCS and body.args
                and isinstance(body.args[0], ast.Name) and body.args[0].id == var):
            return None
        kwargs = {k.arg: k.value for k in body.keywords}
        axis_node = kwargs.pop("axis", body.args[1] if len(body.args) == 2 else None)
        if kwargs or len(body.args) > 2:
            return None
        return 0 if axis_node is None else int_literal(axis_node)

    # -- the three forms ---------------------------------------------------
    def find(self, range_index: Optional[str], extend: bool = False) -> dict[str, Accumulator]:
        """The accumulators; with ``extend``, tuples that grow by ``acc = acc +
        (v,)`` / ``acc += (v,)`` (possibly under an ``if``) are ``extend``
        accumulators (:func:`growth_statement`)."""
        accs: dict[str, Accumulator] = {}
        if extend:
            for stmt in self.loop.body:
                grown = growth_statement(stmt)
                if grown is not None:
                    name, inner, guard = grown
                    if name in accs:
                        raise Decline("L2S501", f"`{name}` grows 2 times per step", inner)
                    accs[name] = self._extend(name, inner, guard)
        appends: dict[str, list[ast.Call]] = {}
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "append" and isinstance(node.func.value, ast.Name)):
                    appends.setdefault(node.func.value.id, []).append(node)
        for name, calls in appends.items():
            accs[name] = self._list(name, calls)
        for stmt in self.loop.body:
            for node in walk_scope(stmt):
                name = _tuple_append_target(node)
                if name is not None and name not in accs:
                    accs[name] = self._tuple(name, node)
        if range_index is not None:
            for stmt in self.loop.body:
                acc = self._at_set(stmt, range_index)
                if acc is not None and acc.name not in accs:
                    accs[acc.name] = acc
        for stmt, names in self.tuple_inits.values():
            others = [n for n in names if n not in accs or accs[n].kind not in ("list", "tuple")]
            if others:
                raise Decline("L2S502", f"`{ast.unparse(stmt)}` also assigns `{others[0]}`; give each accumulator "
                              "its own `name = []` line", stmt)
        return accs

    def _list(self, name: str, calls: list[ast.Call]) -> Accumulator:
        if name in self.ctx.written:
            raise Decline("L2S501", f"`{name}` is both appended to and reassigned in the loop", calls[0])
        if len(calls) != 1:
            raise Decline("L2S501", f"`{name}.append` is called {len(calls)} times per step; append one value "
                          f"(a tuple or a stacked {advice(self.ctx, 'array', 'tensor')}) once per step", calls[1])
        call = calls[0]
        stmt = self.mctx.parent(call)
        if not isinstance(stmt, ast.Expr) or len(call.args) != 1 or call.keywords \
                or isinstance(call.args[0], ast.Starred):
            raise Decline("L2S501", f"the result of `{name}.append(...)` is used, or it has unusual arguments", call)
        self._check_top_level(stmt, name, f"{name}.append(...)")
        refs = self._refs_in_body(name)
        if len(refs) != 1:
            raise Decline("L2S501", f"`{name}` is also read inside the loop; only `{name}.append(...)` is allowed "
                          f"there", next(r for r in refs if r is not call.func.value))
        if any(isinstance(n, ast.Name) and n.id == name for n in walk(call.args[0])):
            raise Decline("L2S501", f"`{name}` is appended to itself", call)
        init = self._check_init(name, "list")
        return Accumulator("list", name, stmt, call.args[0], init, self._consumers(name, init, stmt))

    def _extend(self, name: str, stmt: ast.stmt, guard: Optional[ast.If]) -> Accumulator:
        count = sum(1 for s in self.loop.body for n in walk_scope(s) if _tuple_append_target(n) == name)
        if count != 1:
            raise Decline("L2S501", f"`{name}` grows {count} times per step", stmt)
        value = _tuple_value_of(stmt)
        own = {id(n) for n in walk(stmt) if isinstance(n, ast.Name) and n.id == name}
        others = [r for r in self._refs_in_body(name) if id(r) not in own]
        if others:
            raise Decline("L2S501", f"`{name}` is also read inside the loop", others[0])
        if any(isinstance(n, ast.Name) and n.id == name for n in walk(value)):
            raise Decline("L2S501", f"`{name}` is added to itself", stmt)
        return Accumulator("extend", name, stmt, value, guard=guard)

    def _tuple(self, name: str, stmt: ast.stmt) -> Accumulator:
        value = _tuple_value_of(stmt)
        if isinstance(value, ast.Starred):
            raise Decline("L2S501", f"`{name}` grows by a starred expression", stmt)
        self._check_top_level(stmt, name, ast.unparse(stmt))
        count = sum(1 for s in self.loop.body for n in walk_scope(s) if _tuple_append_target(n) == name)
        if count != 1:
            raise Decline("L2S501", f"`{name}` grows {count} times per step", stmt)
        refs = self._refs_in_body(name)
        if len(refs) != (2 if isinstance(stmt, ast.Assign) else 1):
            raise Decline("L2S501", f"`{name}` is also read inside the loop", stmt)
        if any(isinstance(n, ast.Name) and n.id == name for n in walk(value)):
            raise Decline("L2S501", f"`{name}` is added to itself", stmt)
        init = self._check_init(name, "tuple")
        return Accumulator("tuple", name, stmt, value, init, self._consumers(name, init, stmt))

    def _at_set(self, stmt: ast.stmt, index: str) -> Optional[Accumulator]:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            return None
        name = stmt.targets[0].id
        call = stmt.value
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "set"
                and len(call.args) == 1 and not call.keywords and not isinstance(call.args[0], ast.Starred)):
            return None
        sub = call.func.value
        if not (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Attribute) and sub.value.attr == "at"
                and isinstance(sub.value.value, ast.Name) and sub.value.value.id == name):
            return None
        parts = list(sub.slice.elts) if isinstance(sub.slice, ast.Tuple) else [sub.slice]
        pos = None
        offset = 0
        for i, part in enumerate(parts):
            c = index_offset(part, index)
            if c is not None:
                pos, offset = i, c
                break
            if not (full_slice(part) or (i == 0 and isinstance(part, ast.Constant) and part.value is Ellipsis)):
                return None
        if pos is None or not all(full_slice(p) for p in parts[pos + 1:]):
            return None
        value = call.args[0]
        if any(isinstance(n, ast.Name) and n.id == name for n in walk(value)):
            return None
        if len(self._refs_in_body(name)) != 2:  # the target and `name.at`
            return None
        defs = self.fctx.defs_before(self.loop, name)
        if not defs or any(d.kind in ("undef", "del") for d in defs):
            return None
        return Accumulator("at_set", name, stmt, value, None, [], parts[:pos], pos, offset)


def _tuple_append_target(node: ast.AST) -> Optional[str]:
    if (isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and isinstance(node.target, ast.Name)
            and isinstance(node.value, ast.Tuple) and len(node.value.elts) == 1):
        return node.target.id
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        name = node.targets[0].id
        v = node.value
        if (isinstance(v, ast.BinOp) and isinstance(v.op, ast.Add) and isinstance(v.left, ast.Name)
                and v.left.id == name and isinstance(v.right, ast.Tuple) and len(v.right.elts) == 1):
            return name
        if (isinstance(v, ast.Tuple) and len(v.elts) == 2 and isinstance(v.elts[0], ast.Starred)
                and isinstance(v.elts[0].value, ast.Name) and v.elts[0].value.id == name):
            return name
    return None


def growth_statement(stmt: ast.stmt) -> Optional[tuple[str, ast.stmt, Optional[ast.If]]]:
    """``(name, statement, guard)`` for a statement of a loop body that grows a
    tuple by one item, ``acc = acc + (v,)`` or ``acc += (v,)``, alone or as the
    only statement of an ``if`` without ``else`` (``guard``)."""
    guard = None
    if isinstance(stmt, ast.If) and len(stmt.body) == 1 and not stmt.orelse:
        guard, stmt = stmt, stmt.body[0]
    if not isinstance(stmt, (ast.Assign, ast.AugAssign)):
        return None
    name = _tuple_append_target(stmt)
    if name is None or (isinstance(stmt, ast.Assign) and not isinstance(stmt.value, ast.BinOp)):
        return None  # `(*acc, v)` is not a growth the emitter writes back
    if isinstance(_tuple_value_of(stmt), ast.Starred):
        return None
    return name, stmt, guard


def _tuple_value_of(stmt: ast.stmt) -> ast.AST:
    """``v`` of ``acc += (v,)``, ``acc = acc + (v,)`` or ``acc = (*acc, v)``."""
    if isinstance(stmt, ast.AugAssign):
        return stmt.value.elts[0]
    v = stmt.value
    if isinstance(v, ast.BinOp):
        return v.right.elts[0]
    return v.elts[1]


def plan_outputs(la) -> None:
    """The per-step outputs (``la.ys``): accumulated values, ``.at[].set`` rows
    and the last values of names assigned every step."""
    mctx, accs, last_values, index_info = la.mctx, la.accs, la.last_values, la.index_info
    ys: list[YsItem] = []
    body_index = {id(s): i for i, s in enumerate(la.loop.body)}
    for acc in sorted(accs.values(), key=lambda a: position(a.stmt)):
        pos = body_index[id(acc.stmt)]
        later_writes = all_written_names(la.loop.body[pos + 1:])
        value_reads = {n.id for n in reads(acc.value)}
        bind_value = bool(value_reads & later_writes)
        is_name = acc.value.id if isinstance(acc.value, ast.Name) and not bind_value else None
        state = la.body_rd.before.get(id(acc.stmt), {})

        def defs_of(n, state=state):
            d = state.get(n)
            if d is None:
                return la.fctx.defs_before(la.loop, n) or None
            if any(x.kind == "entry" for x in d):
                return (d - {x for x in d if x.kind == "entry"}) | la.fctx.defs_before(la.loop, n) or None
            return d

        init = mctx.span(acc.init) if acc.init is not None else None
        if acc.kind in ("list", "tuple") and not acc.consumers:
            # collected but never read after the loop: not collected at all
            ys.append(YsItem("discard", acc.name, mctx.span(acc.value), statement=mctx.span(acc.stmt), init=init))
            continue
        kind = la.facts.kind(acc.value, defs_of)
        array_consumers = any(c.kind in ("stack", "array", "sequence") for c in acc.consumers)
        if not kind.is_array and kind.tag != UNKNOWN and not array_consumers and any(
                c.kind in ("len", "index") for c in acc.consumers):
            c = next(c for c in acc.consumers if c.kind in ("len", "index"))
            raise Decline("L2S501", f"`{acc.name}` collects {kind.describe()} per step and is used as "
                          f"`{short(mctx.source(c.node))}` after the loop; the scan returns the per-step values "
                          "as one pytree of stacked leaves, where that would mean something else", c.node)
        # `jnp.stack(outs)` turns each item into an array: the step does that for items that may be
        # Python values or containers; pytrees collected for a leaf-wise stack pass through unchanged
        wrap = array_consumers and not kind.is_array and not _carry_of_array_type(la, acc.value, is_name)
        item = YsItem("append" if acc.kind in ("list", "tuple") else "at_set", acc.name, mctx.span(acc.value),
                      is_name, bind_value, wrap_asarray=wrap,
                      statement=mctx.span(acc.stmt), init=init)
        for c in acc.consumers:
            item.consumers.append(Consumer(mctx.span(c.node), c.kind, c.axis if c.kind != "index" else c.index,
                                           c.flipped, mctx.span(c.arg), _self_assignment(mctx, c.node, acc.name)))
        if acc.kind == "at_set":
            item.wrap_asarray = False  # `.set` converts the value like the original did
            item.at_index_before = [mctx.source(p) for p in acc.index_parts]
            item.at_axis = acc.index_axis
            item.at_offset = acc.offset
            item.at_target = mctx.span(acc.stmt.value.func.value)
            info = index_info
            lo, hi = info["lo"], info["hi"]
            first = lo.shift(acc.offset) if lo is not None else None
            end = hi.shift(acc.offset) if hi is not None else None
            item.at_slice = None
            item.at_arange = None
            if info["sliceable"] and first.nonnegative() and end.nonnegative():
                start_txt = "" if first.is_const and first.const == 0 else first.render()
                step_txt = "" if info["step"] == 1 else f":{info['step']}"
                item.at_slice = f"{start_txt}:{end.render()}{step_txt}"
            else:
                item.at_arange = list(info["arange_args"])
        ys.append(item)
    notes = la.__dict__.setdefault("notes", [])
    for name in last_values:
        why = _stacked_for_last_value(la, name)
        if why is None:
            # its value before the loop has the per-step value's shape and dtype: carried, not stacked
            la.carries.append(name)
            continue
        notes.append(f"`{name}` is stacked and its last row taken: {why}")
        ys.append(YsItem("last", name, None, name, False, wrap_asarray=False))
    la.ys = ys


def _self_assignment(mctx, node: ast.AST, name: str):
    """The span of ``name = node`` when ``node`` is the whole value of a plain
    assignment back to the accumulator (``outs = jnp.stack(outs)``)."""
    stmt = mctx.parent(node)
    if isinstance(stmt, ast.Assign) and stmt.value is node and len(stmt.targets) == 1 \
            and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == name:
        return mctx.span(stmt)
    return None


_LIKE = {"zeros_like", "ones_like", "full_like", "empty_like"}


def _stacked_for_last_value(la, name: str):
    """Why the last value of ``name`` (assigned in every step, read after the
    loop) must be stacked and its last row taken, or ``None`` when it can be
    carried instead: it has a value before the loop whose shape and dtype are
    provably those of every per-step value (the scan keeps one carry type)."""
    from .checks.carries import _defs_in_body, _scalar, _scalar_literal

    defs = la.fctx.defs_before(la.loop, name)
    if not defs or any(d.kind in ("undef", "del") for d in defs):
        return "nothing before the loop gives it a value"
    inits = []
    for d in defs:
        node = d.node
        if d.kind != "assign" or not isinstance(node, ast.Assign) or len(node.targets) != 1 \
                or not isinstance(node.targets[0], ast.Name):
            return "its value before the loop is not a plain assignment"
        inits.append(node.value)
    updates = []
    for stmt in la.body_statements():
        if name not in header_effects(stmt).writes:
            continue
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            return "not every per-step value is a plain assignment"
        updates.append(stmt)
    if not updates:
        return "no per-step value is a plain assignment"
    why = "nothing shows that its value before the loop has the shape and dtype of the per-step values"
    # a scalar before the loop and scalars in the loop, of dtypes the carry can hold
    if all(_scalar_literal(la, v) for v in inits) and all(_scalar(la, u.value, name, u, 0) for u in updates):
        before = la.facts.name_kind(name, defs).dtype
        for u in updates:
            after = la.facts.dtype(u.value, _defs_in_body(la, u))
            if after.category is None:
                return why
            if before.weak and before.category is not None and _rank(before.category) <= _rank(after.category):
                continue
            if before.name is None or before.name != after.name or after.weak != before.weak:
                return why
        return None
    # `v = a` / `v = jnp.zeros_like(a)` before the loop and `v = a` in it, where `a` keeps its type
    # from step to step (a carry of this loop, or a value the loop does not change)
    # (a carry written once in the body has the carry's type wherever it is read)
    writes: dict[str, int] = {}
    for stmt in la.body_statements():
        for n in header_effects(stmt).writes:
            writes[n] = writes.get(n, 0) + 1
    stable = {c for c in la.carries if writes.get(c, 0) == 1} | \
        {n for n in la.fctx.locals | set(la.fctx.params) if n not in la.written}
    sources = set()
    for v in inits:
        if isinstance(v, ast.Name):
            sources.add(v.id)
        elif isinstance(v, ast.Call) and len(v.args) >= 1 and isinstance(v.args[0], ast.Name) and not v.keywords:
            q = la.qual(v.func) or ""
            last = q.rsplit(".", 1)[-1]
            if q.startswith("jax.numpy.") and last in _LIKE and len(v.args) == (2 if last == "full_like" else 1):
                sources.add(v.args[0].id)
            else:
                return why
        else:
            return why
    if len(sources) != 1:
        return why
    (source,) = sources
    if source not in stable or source in la.targets:
        return why
    if all(isinstance(u.value, ast.Name) and u.value.id == source for u in updates):
        return None
    return why


def _carry_of_array_type(la, value: ast.AST, read_at_end: Optional[str]) -> bool:
    """``value`` is a carry whose value before the loop is one array: inside the
    scan it is an array of that type wherever the step reads it (read at the
    step's end, or anywhere when the body writes it only once), so stacking it
    needs no ``jnp.asarray``."""
    if not isinstance(value, ast.Name) or value.id not in la.carries:
        return False
    name = value.id
    if not la.facts.name_kind(name, la.fctx.defs_before(la.loop, name)).is_array:
        return False
    if read_at_end == name:
        return True
    writes = sum(1 for stmt in la.body_statements() if name in header_effects(stmt).writes)
    return writes == 1
