"""The form of the loop statement itself (``L2S01x``)."""

from __future__ import annotations

import ast

from ..decline import Code, Decline
from ..examples import Invalid

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


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S010", "async-for", """
        async def consume(stream, h):
            async for x in stream:
                h = jnp.tanh(h + x)
            return h
        """, says=("async for",)),
    Invalid("L2S011", "module-level-loop", """
        xs = jnp.ones((5, 3))
        h = jnp.zeros(3)
        for x in xs:
            h = jnp.tanh(h + x)
        """, says=("not inside a function", "move it into one")),
    Invalid("L2S012", "for-else", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            else:
                h = h * 2.0  # <-
            return h
        """, says=("else", "after the loop")),
    Invalid("L2S013", "attribute-target", """
        class State:
            pass

        def rnn(xs, h):
            s = State()
            for s.x in xs:  # <-
                h = jnp.tanh(h + s.x)
            return h
        """, says=("s.x", "not to a name")),
    Invalid("L2S013", "starred-target", """
        def rnn(rows, h):
            for first, *rest in rows:  # <-
                h = jnp.tanh(h + first)
            return h
        """, says=("starred",)),
    Invalid("L2S013", "range-unpacked", """
        def rnn(xs, h):
            for t, s in range(xs.shape[0]):  # <-
                h = jnp.tanh(h + xs[t])
            return h
        """, says=("range()", "unpacked")),
    Invalid("L2S014", "locals", """
        def rnn(xs, h):
            for x in xs:
                h = jnp.tanh(h + x)
            debug = locals()  # <-
            return h
        """, says=("locals()",)),
    Invalid("L2S014", "eval", """
        def rnn(xs, h, activation):
            for x in xs:
                h = eval(activation)(h + x)  # <-
                h = jnp.tanh(h)
            return h
        """, says=("eval()",)),
)
