"""The form of the loop statement itself (``L2S01x``)."""

from __future__ import annotations

import ast

from ..decline import Code, Decline

CODES = (
    Code("L2S010", "async-for", "`async for` loop", "An asynchronous loop cannot become a scan."),
    Code("L2S011", "not-in-function", "loop outside a function",
        "Move the loop into a function: the scan step is defined next to the loop, in a function body."),
    Code("L2S012", "for-else", "`for ... else`", "Move the `else` block after the loop (it always runs when there is no `break`)."),
    Code("L2S013", "unsupported-target", "loop target is not a name or a tuple of names",
        "Iterate into plain names (`for x in xs:`), then assign attributes or items inside the body."),
    Code("L2S014", "dynamic-scope", "the function uses `locals()`, `vars()`, `eval`, `exec` or zero-argument `super()`",
        "These see the function's own frame, which a scan step would change; rewrite by hand."),
)


def check_loop_form(la) -> None:
    """``async for``, a loop outside a function, ``for ... else``, and functions
    that read their own frame (``locals()``, ``eval``...)."""
    loop = la.loop
    if isinstance(loop, ast.AsyncFor):
        raise Decline("L2S010", "`async for` cannot become a scan", loop)
    if la.func is None:
        raise Decline("L2S011", "the loop is not inside a function; move it into one to rewrite it", loop)
    if loop.orelse:
        raise Decline("L2S012", "the loop has an `else:` block; move its statements after the loop",
                      loop.orelse[0])
    node = la.fctx.uses_dynamic_scope
    if node is not None:
        raise Decline("L2S014", f"the function calls `{ast.unparse(node.func)}()`, which inspects its frame", node)
