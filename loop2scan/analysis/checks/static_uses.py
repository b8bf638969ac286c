"""Per-step values used where a Python value is needed (``L2S307``): strings,
slices, shapes, and parameters of the module's functions that need them."""

from __future__ import annotations

import ast
from typing import Optional

from ..activity import walk_all, walk_body
from ..decline import Code, Decline, short
from ..examples import Invalid, Valid
from ..imports import is_under

CODES = (
    Code("L2S307", "index-as-python-value", "the loop index is used as a Python value",
        "Inside a scan the index is a traced integer: it cannot size arrays, bound slices or `range`s, or index Python lists."),
)


def check_static_uses(la) -> None:
    """Per-step values formatted into strings, made into slices or used as
    shapes: those must be Python values, and inside a scan they are traced."""
    tainted = la.tainted
    for node in walk_all(la.loop.body):
        if not (isinstance(node, ast.Name) and node.id in tainted and isinstance(node.ctx, ast.Load)):
            continue
        what = f"the loop variable `{node.id}`" if node.id in la.targets else \
            f"`{node.id}`, which changes every step,"
        cur: ast.AST = node
        parent = la.mctx.parent(cur)
        while isinstance(parent, (ast.BinOp, ast.UnaryOp, ast.Tuple, ast.List, ast.Starred)) or (
                isinstance(parent, ast.Subscript) and parent.value is cur):
            cur, parent = parent, la.mctx.parent(parent)
        if isinstance(parent, ast.FormattedValue):
            raise Decline("L2S307", f"{what} is formatted into a string; inside a scan it is a traced array",
                          node)
        if isinstance(parent, ast.Call):
            f = parent.func
            if isinstance(f, ast.Name) and f.id in ("str", "repr", "format", "hash", "slice") and f.id not in \
                    la.fctx.shadowing:
                raise Decline("L2S307", f"`{short(ast.unparse(parent))}` needs {what} as a Python value; inside "
                              "a scan it is a traced array", node)
            if _shape_argument(la, parent, cur):
                raise Decline("L2S307", f"{what} sets a shape in `{short(ast.unparse(parent))}`; shapes must "
                              "be Python values, and inside a scan it is a traced array", node)
            use = _python_use_in_callee(la, parent, cur)
            if use is not None:
                callee, text = use
                raise Decline("L2S307", f"{what} is passed to `{callee}`, which uses it as a Python value "
                              f"(`{short(text)}`); inside a scan it is a traced array", node)


def _python_use_in_callee(la, call: ast.Call, arg: ast.AST) -> Optional[tuple[str, str]]:
    """A function of this module (or defined in the enclosing function) that
    branches on the parameter ``arg`` binds, loops ``range`` over it, or
    indexes a Python list or tuple with it."""
    if not isinstance(call.func, ast.Name) or arg not in call.args:
        return None
    name = call.func.id
    callee = next((n for n in walk_body(la.func) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and n.name == name), None) or la.mctx.module_functions.get(name)
    if callee is None:
        return None
    params = [a.arg for a in callee.args.posonlyargs + callee.args.args]
    pos = call.args.index(arg)
    if pos >= len(params):
        return None
    param = params[pos]
    sequences = {n.targets[0].id for n in ast.walk(callee) if isinstance(n, ast.Assign) and len(n.targets) == 1
                 and isinstance(n.targets[0], ast.Name) and isinstance(n.value, (ast.List, ast.Tuple))}
    sequences |= {n.targets[0].id for n in walk_body(la.func) if isinstance(n, ast.Assign)
                  and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
                  and isinstance(n.value, (ast.List, ast.Tuple))}

    def reads_param(e: Optional[ast.AST]) -> bool:
        return e is not None and param in la.value_reads(e)

    for node in ast.walk(callee):
        if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)) and reads_param(node.test):
            return name, ast.unparse(node.test)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
                and any(reads_param(a) for a in node.args):
            return name, ast.unparse(node)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and node.value.id in sequences and reads_param(node.slice):
            return name, ast.unparse(node)
    return None


def _shape_argument(la, call: ast.Call, arg: ast.AST) -> bool:
    q = la.qual(call.func) or ""
    last = q.rsplit(".", 1)[-1] if q else (call.func.attr if isinstance(call.func, ast.Attribute) else "")
    pos = next((i for i, a in enumerate(call.args) if a is arg), None)
    kw = next((k.arg for k in call.keywords if k.value is arg), None)
    if kw in ("shape", "new_shape", "newshape", "size", "num", "length", "repeats"):
        return True
    if is_under(q, "jax.numpy", "jax.lax", "jax._src.numpy"):
        if last in ("zeros", "ones", "empty", "full", "eye", "identity", "arange", "tri", "iota") and pos == 0:
            return True
        if last in ("reshape", "broadcast_to", "full") and pos == 1:
            return True
        if last == "linspace" and pos == 2:
            return True
    if is_under(q, "jax.random") and pos is not None and pos >= 1 and last not in ("fold_in", "split",
                                                                                    "choice", "permutation"):
        return True
    if not q and isinstance(call.func, ast.Attribute) and call.func.attr in ("reshape", "broadcast_to") \
            and pos is not None:
        return True
    return False


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S307", "index-passed-to-helper-used-as-list-index", """
        COEFFS = [0.5, 0.25, 0.125]

        def f(x):
            def coefficient(i):
                return jnp.float32(COEFFS[i]) if i < 3 else jnp.float32(0.0)

            p = jnp.zeros_like(x)
            for i in range(3):
                p = coefficient(i) + p * x  # <-
            return p
        """, says=("`i`", "`coefficient`")),
    Invalid("L2S307", "index-as-axis-keyword", """
        def rnn(xs, h):
            for t in range(xs.ndim):
                h = h + jnp.sum(xs, axis=t)  # <-
            return h
        """, says=("`t`", "axis=")),
    Invalid("L2S307", "index-bounds-slice", """
        def prefix_means(xs, h):
            for t in range(1, xs.shape[0]):
                h = h + jnp.mean(xs[:t], axis=0)  # <-
            return h
        """, says=("`t`", "dynamic_slice")),
    Invalid("L2S307", "index-as-range", """
        def rnn(xs, h):
            for t in range(xs.shape[0]):
                for s in range(t):  # <-
                    h = jnp.tanh(h + xs[s])
            return h
        """, says=("range(t)",)),
    Invalid("L2S307", "index-formats-a-dict-key", """
        def mlp(params, x):
            for i in range(3):
                w = params[f"layer_{i}"]  # <-
                x = jnp.tanh(x @ w)
            return x
        """, says=("`i`",)),
    Invalid("L2S307", "index-sizes-an-array", """
        def causal_sums(xs, h):
            for t in range(xs.shape[0]):
                h = h + jnp.sum(jnp.ones(t + 1)) * xs[t]  # <-
            return h
        """, says=("`t`",)),
)

VALID = (
    Valid("L2S307", "index-only-indexes-arrays", """
        def rnn(xs, ws, h):
            for t in range(xs.shape[0]):
                h = jnp.tanh(h @ ws[t] + xs[t])
            return h
        """, "rnn", ('f32[5,3,4], f32[5,4,4], f32[3,4]',)),
    Valid("L2S307", "index-into-stacked-arrays", """
        def rnn(x, h):
            weights = jnp.stack([jnp.eye(4), 0.5 * jnp.eye(4), -jnp.eye(4)])
            for t in range(len(weights)):
                h = jnp.tanh(h @ weights[t] + x)
            return h
        """, "rnn", ('f32[3,4], f32[3,4]',)),
    Valid("L2S307", "index-arithmetic-stays-weakly-typed", """
        def bias_corrected(p, m, g, n, b1):
            for i in range(n):
                m = m * b1 + (1 - b1) * g
                p = p - 0.1 * m / (1 - b1 ** (i + 1)) / (jnp.sqrt(jnp.abs(m)) + 1e-3)
            return p
        """, "bias_corrected", ("f32[3], f32[3], f32[3], 4, 0.9", "f32[3], f32[3], f32[3], 1, 0.5"),
          static_argnums=(3,),
          modes=("strict", "x64")),
    Valid("L2S307", "index-arithmetic-and-slices", """
        def decayed(xs, h):
            for t in range(1, xs.shape[0]):
                h = h * 0.5 ** t + xs[t] / (t + 1.0)
            return h
        """, "decayed", ("f32[5,3], f32[3]", "f32[1,3], f32[3]"), modes=("strict", "x64")),
    Valid("L2S307", "descending-index-arithmetic", """
        def backward(xs, h):
            T = xs.shape[0]
            for t in range(T - 1, -1, -1):
                h = jnp.tanh(h + xs[t] * (t + 1))
            return h
        """, "backward", ("f32[5,3], f32[3]", "f32[1,3], f32[3]"), modes=("strict", "x64")),
    Valid("L2S307", "reversed-range-index-arithmetic", """
        def backward(xs, h):
            for t in reversed(range(1, xs.shape[0])):
                h = jnp.tanh(h + xs[t] * t)
            return h
        """, "backward", ("f32[5,3], f32[3]", "f32[2,3], f32[3]"), modes=("strict", "x64")),
    Valid("L2S307", "enumerate-counter-arithmetic", """
        def weighted(xs, h):
            for i, x in enumerate(xs, start=1):
                h = jnp.tanh(h + x / i)
            return h
        """, "weighted", ("f32[5,3], f32[3]", "f32[1,3], f32[3]"), modes=("strict", "x64")),
)
