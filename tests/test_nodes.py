"""The pre-order listing of syntax trees that every analysis pass walks, and
the statement index of a module."""

from __future__ import annotations

import ast
import sys

from loop2scan.analysis import nodes

SOURCE = '''
def f(xs, w, *, k=lambda a: a + 1):
    for x in xs[::-1]:
        h = {"a": [x @ w, -x], **k(x)} if x is not None else (yield x)
    return [y for y in (1, 2) if y > 0]
'''


def _plain(tree: ast.AST) -> list[ast.AST]:
    """``ast.walk``'s nodes in pre-order, without expression contexts."""
    out = []

    def visit(node):
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.expr_context):
                visit(child)

    visit(tree)
    return out


def test_walk_lists_every_node_in_pre_order_and_each_subtree_as_a_slice():
    tree = ast.parse(SOURCE)
    order = nodes.walk(tree)
    assert order == _plain(tree)
    loop = tree.body[0].body[0]
    assert nodes.walk(loop) == _plain(loop)
    assert nodes.walk(loop)[0] is loop


def test_a_subtree_listed_first_is_listed_again_inside_its_parent():
    tree = ast.parse(SOURCE)
    loop = tree.body[0].body[0]
    assert nodes.walk(loop) == _plain(loop)
    assert nodes.walk(tree) == _plain(tree)
    assert nodes.walk(loop) == _plain(loop)


def test_expressions_nested_deeper_than_the_interpreter_stack():
    depth = 600
    tree = ast.parse("x = " + " + ".join(["a"] * depth))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)  # the listing must not need a frame per level
    try:
        order = nodes.walk(tree)
    finally:
        sys.setrecursionlimit(limit)
    assert sum(isinstance(n, ast.Name) for n in order) == depth + 1
    assert len(order) == len(nodes._index_iterative(ast.parse("x = " + " + ".join(["a"] * depth))))


def test_module_imports_bind_in_source_order():
    """Of two imports of one name in separate blocks, the later one is the
    binding that holds after both run (the index walks blocks with a stack,
    so it must sort)."""
    from loop2scan.analysis.context import ModuleContext, statement_index

    src = ("import os\n"
           "if os.environ.get('A'):\n    import numpy as np\n"
           "if os.environ.get('B'):\n    import jax.numpy as np\n"
           "    from jax import lax as L\n"
           "else:\n    from jax import numpy as L\n"
           "def f():\n    import torch as np\n")
    tree = ast.parse(src)
    index = statement_index(tree)
    lines = [n.lineno for n in index.import_nodes]
    assert lines == sorted(lines) == [1, 3, 5, 6, 8, 10]
    assert [n.lineno for n in index.module_import_nodes] == [1, 3, 5, 6, 8]
    table = ModuleContext(tree, src, "jax").imports
    assert table.lookup("np") == "jax.numpy"
    assert table.lookup("L") == "jax.numpy"
