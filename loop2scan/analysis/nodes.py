"""Fast traversal of syntax trees.

The analysis asks for every node under a function, a statement or a loop
many times over (a scan of a function's assignments, its attribute reads,
its calls ...).  ``ast.walk`` rebuilds that list each time, through a
generator per node; on a large module that was most of the analysis time.
Here a subtree is listed once, in pre-order, and every node of it remembers
where its own subtree lies in that list: walking it again, or walking any
part of it, is a slice.

Trees are never changed after parsing, which is what makes this safe.
Expression contexts (``Load``/``Store``/``Del``, shared by every node of a
tree) are not listed: nothing asks for them.
"""

from __future__ import annotations

import ast
from typing import Iterator

_SPAN = "_l2s_span"
_AST = ast.AST


#: Fields that never hold a node (names, flags, constants), by node type; ``None`` for every type.
_SCALAR_FIELDS = {
    None: {"ctx", "id", "attr", "kind", "type_comment", "conversion", "simple", "is_async", "level", "module",
           "tag", "asname", "rest", "kwd_attrs"},
    ast.Constant: {"value"},
    ast.keyword: {"arg"},
    ast.arg: {"arg"},
    ast.Global: {"names"},
    ast.Nonlocal: {"names"},
    ast.alias: {"name"},
    ast.FunctionDef: {"name"},
    ast.AsyncFunctionDef: {"name"},
    ast.ClassDef: {"name"},
    ast.ExceptHandler: {"name"},
    ast.MatchAs: {"name"},
    ast.MatchStar: {"name"},
}
_NODE_FIELDS: dict[type, tuple[str, ...]] = {}


def _node_fields(cls: type) -> tuple[str, ...]:
    skip = _SCALAR_FIELDS[None] | _SCALAR_FIELDS.get(cls, set())
    fields = _NODE_FIELDS[cls] = tuple(f for f in cls._fields if f not in skip)
    return fields


def children(node: ast.AST) -> list[ast.AST]:
    """The child nodes of ``node`` in field order (like ``ast.iter_child_nodes``,
    without expression contexts)."""
    cls = node.__class__
    fields = _NODE_FIELDS.get(cls)
    if fields is None:
        fields = _node_fields(cls)
    out = []
    for name in fields:
        value = getattr(node, name, None)
        if value is None:
            continue
        if value.__class__ is list:
            for item in value:
                if isinstance(item, _AST):
                    out.append(item)
        elif isinstance(value, _AST):  # expression contexts are in no field listed
            out.append(value)
    return out


def walk(node: ast.AST) -> list[ast.AST]:
    """Every node under ``node`` (itself first), in pre-order."""
    span = node.__dict__.get(_SPAN)
    if span is None:
        return _index(node)
    order, start, end = span
    if start == 0 and end == len(order):
        return order
    return order[start:end]


def walk_each(nodes) -> Iterator[ast.AST]:
    """Every node under each of ``nodes``."""
    for node in nodes:
        yield from walk(node)


def _index(root: ast.AST) -> list[ast.AST]:
    try:
        return _index_recursive(root)
    except RecursionError:  # expressions nested deeper than the interpreter's stack: the same, with a list for stack
        return _index_iterative(root)


def _index_recursive(root: ast.AST) -> list[ast.AST]:
    order: list[ast.AST] = []
    append = order.append
    span = _SPAN

    def visit(node: ast.AST) -> None:
        start = len(order)
        append(node)
        for child in children(node):
            visit(child)
        node.__dict__[span] = (order, start, len(order))

    visit(root)
    return order


def _index_iterative(root: ast.AST) -> list[ast.AST]:
    order: list[ast.AST] = []
    append = order.append
    stack: list = [root]
    pop = stack.pop
    push = stack.append
    extend = stack.extend
    while stack:
        cur = pop()
        if cur.__class__ is tuple:
            node, start = cur
            node.__dict__[_SPAN] = (order, start, len(order))
            continue
        push((cur, len(order)))
        append(cur)
        kids = children(cur)
        if kids:
            kids.reverse()
            extend(kids)
    return order
