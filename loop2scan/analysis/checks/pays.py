"""Where a scan pays (``L2S70x``): short constant loops, loops unrolled on
purpose, and functions that may run eagerly.

A correct rewrite can still make a program worse:

* a loop of a few constant steps is straight-line code for XLA, which fuses
  across the steps; a scan turns it into a ``while`` loop (``L2S701``);
* a loop that implements an ``unroll`` remainder, or that sits beside a
  ``lax`` loop over the same values (a reference or debug loop), or a test's
  reference loop, is unrolled on purpose (``L2S703``);
* outside a JAX transformation, a step defined inside the function is a new
  function object on every call, so every eager call traces and compiles the
  scan again.  Such loops get a step defined once at module level, with the
  function's values it reads passed through the carry unchanged; where that is
  not possible the loop is declined (``L2S702``).  :mod:`loop2scan.analysis.calls`
  finds the context from the project's callers.
"""

from __future__ import annotations

import ast
import fnmatch
import os
from typing import Optional

from ...files import DEFAULT_TEST_FILES
from ...plan import Context
from ..activity import walk_all
from ..calls import TRACED, function_context, transform_name
from ..decline import Code, Decline, short
from ..examples import Invalid, NotThis, Valid
from ..imports import is_array_call, is_under
from ..kinds import ARRAY_METHODS, ARRAY_ONLY_ATTRIBUTES, CONTAINER, NONE, OBJECT, STRING
from ..nodes import walk

CODES = (
    Code("L2S701", "short-loop", "the loop runs a small constant number of steps",
         "Below `min-trip-count` steps a scan gains nothing and XLA loses the fusion of the unrolled code. "
         "Lower `min-trip-count` (in [tool.loop2scan] or on the command line) to rewrite it anyway."),
    Code("L2S702", "eager-compile", "the function may run outside a JAX transformation",
         "Eagerly, a scan whose step is defined inside the function compiles on every call. Call the function "
         "under `jax.jit` (or another transformation) where the project shows it, or make the values its loop "
         "reads arrays passed as arguments, so that the step can be defined once at module level."),
    Code("L2S703", "unrolled-on-purpose", "the loop looks unrolled on purpose",
         "A remainder loop of a manual unroll, a reference loop beside a `lax` loop over the same values, or a "
         "test's reference loop is meant to stay a Python loop."),
)

#: Attributes of an array a hoisted value may be read through (anything else marks an object).
_ARRAY_ATTRIBUTES = ARRAY_ONLY_ATTRIBUTES | ARRAY_METHODS | {"at"}
_REMAINDER_WORDS = ("unroll", "remainder", "leftover")


# ---------------------------------------------------------------- L2S701
def check_short_loop(la) -> None:
    """A constant trip count below ``min-trip-count``."""
    minimum = la.mctx.policy.min_trip_count
    if minimum <= 0:
        return
    count = constant_trip_count(la)
    if count is not None and count < minimum:
        steps = f"{count} step{'s' if count != 1 else ''}"
        raise Decline("L2S701", f"the loop runs a constant {steps}, fewer than min-trip-count ({minimum}): a scan "
                      "gains nothing on so few steps and XLA loses the fusion of the unrolled code; lower "
                      "`min-trip-count` to rewrite it anyway", la.loop.iter)


def constant_trip_count(la) -> Optional[int]:
    """The number of steps when the source fixes it, else ``None``."""
    it = la.loop.iter
    if _builtin(it, "reversed", la) and len(it.args) == 1:
        it = it.args[0]
    return _length(la, it, 0)


def _builtin(node: ast.AST, name: str, la) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
            and name not in la.fctx.locals)


def _length(la, expr: ast.AST, depth: int) -> Optional[int]:
    if depth > 6:
        return None
    if _builtin(expr, "range", la) and not expr.keywords and 1 <= len(expr.args) <= 3:
        values = [_int(la, a, depth + 1) for a in expr.args]
        if any(v is None for v in values):
            return None
        try:
            return len(range(*values))
        except ValueError:
            return None
    if _builtin(expr, "zip", la) and expr.args and not expr.keywords:
        lengths = [_length(la, a, depth + 1) for a in expr.args]
        known = [n for n in lengths if n is not None]
        return min(known) if known else None
    if _builtin(expr, "enumerate", la) and expr.args:
        return _length(la, expr.args[0], depth + 1)
    if isinstance(expr, (ast.List, ast.Tuple)) and not any(isinstance(e, ast.Starred) for e in expr.elts):
        return len(expr.elts)
    if isinstance(expr, ast.Call) and expr.args and not expr.keywords:
        q = la.qual(expr.func)
        if q is not None and q.rsplit(".", 1)[-1] in ("array", "asarray", "stack") and \
                is_under(q, "jax.numpy", "numpy"):
            return _length(la, expr.args[0], depth + 1)
    if isinstance(expr, ast.Name):
        value = _single_value(la, expr.id)
        if value is not None:
            return _length(la, value, depth + 1)
    return None


def _int(la, expr: ast.AST, depth: int) -> Optional[int]:
    if depth > 8:
        return None
    if isinstance(expr, ast.Constant) and isinstance(expr.value, int) and not isinstance(expr.value, bool):
        return expr.value
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        v = _int(la, expr.operand, depth + 1)
        return -v if v is not None else None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
        a, b = _int(la, expr.left, depth + 1), _int(la, expr.right, depth + 1)
        if a is None or b is None or (isinstance(expr.op, ast.FloorDiv) and b == 0):
            return None
        return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(expr.op), a // b if b else None)
    if _builtin(expr, "len", la) and len(expr.args) == 1:
        return _length(la, expr.args[0], depth + 1)
    if isinstance(expr, ast.Name):
        value = _single_value(la, expr.id)
        return _int(la, value, depth + 1) if value is not None else None
    return None


def _single_value(la, name: str) -> Optional[ast.AST]:
    """The value of ``name`` when one plain assignment binds it: in the function,
    or (when the function binds it nowhere) at module level."""
    fctx = la.fctx
    if name in fctx.locals:
        value = fctx.single_defs.get(name)
        return value if isinstance(value, ast.AST) else None
    values = la.mctx.module_assigned_values(name)
    if len(values) == 1 and name not in _rebound_at_module_level(la.mctx):
        return values[0]
    return None


def _rebound_at_module_level(mctx) -> set[str]:
    """Module names bound by anything but one plain assignment (augmented
    assignments, loops, ``global`` writes): not constants."""
    cache = mctx.__dict__.get("_non_constant_globals")
    if cache is None:
        cache = set()
        for stmt in mctx.tree.body:
            for node in walk(stmt):
                if isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
                    cache.add(node.target.id)
                elif isinstance(node, (ast.For, ast.AsyncFor, ast.With)) and not isinstance(stmt, (
                        ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    for t in walk(node.target if isinstance(node, (ast.For, ast.AsyncFor)) else node):
                        if isinstance(t, ast.Name) and not isinstance(t.ctx, ast.Load):
                            cache.add(t.id)
                elif isinstance(node, ast.Global):
                    cache.update(node.names)
        mctx.__dict__["_non_constant_globals"] = cache
    return cache


# ---------------------------------------------------------------- L2S703
def check_unrolled_on_purpose(la) -> None:
    """A remainder loop of a manual unroll, a loop beside a ``lax`` loop over
    the same values, or a reference loop in a test module that runs scans."""
    bound = _remainder_bound(la)
    if bound is not None:
        raise Decline("L2S703", f"the trip count `{short(ast.unparse(bound))}` is the remainder of a manual "
                      "unroll: the loop is unrolled on purpose", bound)
    beside = _lax_loop_beside(la)
    if beside is not None:
        call, how, name = beside
        raise Decline("L2S703", f"the function also runs `{how}` over `{name}` (line {call.lineno}): this loop "
                      "looks like a reference or remainder loop kept unrolled on purpose", la.loop)
    if _is_test_module(la.mctx) and _module_runs_lax_loops(la.mctx):
        raise Decline("L2S703", "a loop in a test module that also runs scans or `lax` loops: it is most likely "
                      "the reference a test compares a scan against", la.loop)


def _remainder_bound(la) -> Optional[ast.AST]:
    it = la.loop.iter
    if _builtin(it, "reversed", la) and len(it.args) == 1:
        it = it.args[0]
    if not _builtin(it, "range", la):
        return None
    for arg in it.args:
        if _is_remainder(la, arg, 0):
            return arg
    return None


def _is_remainder(la, expr: ast.AST, depth: int) -> bool:
    if depth > 4:
        return False
    for node in walk(expr):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return True
        if isinstance(node, ast.Name):
            if any(word in node.id.lower() for word in _REMAINDER_WORDS):
                return True
            if node.id in la.fctx.locals:
                for value in la.fctx.assigned_values(node.id):
                    if isinstance(value, tuple):  # `q, r = divmod(n, k)`: r
                        call, index, _ = value
                        if _builtin(call, "divmod", la) and index == 1:
                            return True
                    elif _is_remainder(la, value, depth + 1):
                        return True
    return False


def _lax_loop_beside(la) -> Optional[tuple[ast.Call, str, str]]:
    """A ``lax`` loop (scan, fori_loop, while_loop, map) in the same function
    whose arguments or results share a name with this loop's carries or inputs."""
    ours = set(la.carries) | {n.id for n in walk(la.loop.iter) if isinstance(n, ast.Name)}
    ours -= {"range", "zip", "enumerate", "reversed", "len"}
    if not ours:
        return None
    for node in walk_all(la.func.body):
        if not isinstance(node, ast.Call) or la.inside_loop(node):
            continue
        how = transform_name(la.qual(node.func))
        if how is None or how.rsplit(".", 1)[-1] not in ("scan", "fori_loop", "while_loop", "map",
                                                          "associative_scan"):
            continue
        names = {n.id for a in node.args[1:] for n in walk(a) if isinstance(n, ast.Name)}
        parent = la.mctx.parent(node)
        if isinstance(parent, ast.Assign):
            names |= {n.id for t in parent.targets for n in walk(t) if isinstance(n, ast.Name)}
        shared = sorted(names & ours)
        if shared:
            return node, how, shared[0]
    return None


def _is_test_module(mctx) -> bool:
    path = mctx.path or (mctx.name or "").replace(".", "/") + ".py"
    parts = path.replace(os.sep, "/").split("/")
    for pattern in DEFAULT_TEST_FILES:
        if any(fnmatch.fnmatchcase(part, pattern) for part in parts):
            return True
    return any(q.split(".")[0] in ("pytest", "unittest") or q.startswith("absl.testing")
               for q in mctx.imports.all_aliases().values())


def _module_runs_lax_loops(mctx) -> bool:
    text = mctx.text
    return any(word in text for word in ("scan(", "fori_loop(", "while_loop("))


# ---------------------------------------------------------------- L2S702
def plan_context(la) -> None:
    """Where the function runs, and so the form of the step: a closure inside a
    transformation; defined once at module level (its local values passed in the
    carry) where it may run eagerly; or a decline."""
    if la.mctx.framework == "torch_xla":
        from .torch_time import plan_time_scan

        plan_time_scan(la)  # the step closes over no tensor: it is traced on every call either way
        return
    enclosing = _enclosing_rewritten_loop(la)
    if enclosing is not None:
        la.context = Context(TRACED, f"inside the step of the loop at line {enclosing.lineno}, itself a scan")
        la.hoisted = None
        la.nested_in = enclosing
        return
    ctx = function_context(la.mctx, la.func)
    la.context = ctx
    if ctx.kind == TRACED:
        la.hoisted = None
        return
    name = la.func.name
    if la.mctx.policy.eager == "closure":
        la.hoisted = None  # the project says its functions run under a transformation out of sight
        return
    if la.mctx.policy.eager == "skip":
        raise Decline("L2S702", f"no JAX transformation is seen around `{name}` ({ctx.reason}); "
                      "`eager = \"skip\"` leaves such loops alone", la.loop)
    names, problem = hoistable(la)
    if problem is not None:
        why, node = problem
        raise Decline("L2S702", f"`{name}` may run outside a JAX transformation ({ctx.reason}): a scan step "
                      f"defined inside it would be compiled again on every eager call, and it cannot be defined "
                      f"once at module level because {why}; call `{name}` under `jax.jit` where the project "
                      "shows it, or pass such values as array arguments", node)
    la.hoisted = names


def _enclosing_rewritten_loop(la) -> Optional[ast.AST]:
    """The nearest enclosing ``for`` loop of the same function that is rewritten
    itself: this loop's step then lives inside that step, traced with it."""
    for anc in la.mctx.ancestors(la.loop):
        if anc is la.func:
            return None
        if isinstance(anc, ast.For):
            result = la.mctx.first_pass_result(anc)
            if result is not None and result.status == "rewritten":
                return anc
    return None


def hoistable(la) -> tuple[list[str], Optional[tuple[str, ast.AST]]]:
    """The function's values the step reads (to pass in the carry), or why the
    step cannot be defined at module level."""
    step_reads = la.step_reads(la.xs)
    bound_in_step = set(la.written) | set(la.targets) | set(la.accs) | set(la.carries)
    enclosing_locals = set(la.fctx.locals)
    for anc in la.mctx.ancestors(la.func):
        if isinstance(anc, (ast.FunctionDef, ast.AsyncFunctionDef)):
            enclosing_locals |= la.mctx.function(anc).locals
        elif isinstance(anc, ast.ClassDef):
            break
    passed = [n for n in la.ordered_reads(step_reads) if n not in bound_in_step and n in enclosing_locals]
    for n in passed:
        why = _not_passable(la, n)
        if why is not None:
            return passed, why
    problem = _static_use_of(la, set(passed))
    if problem is not None:
        return passed, problem
    return passed, None


def _not_passable(la, name: str) -> Optional[tuple[str, ast.AST]]:
    """``name`` cannot ride in the carry: not an array (or pytree of arrays)."""
    fctx = la.fctx
    if name not in fctx.locals:
        return f"`{name}` belongs to an enclosing function", la.loop
    args = la.func.args
    first = (args.posonlyargs + args.args)[:1]
    if first and first[0].arg == name and la.mctx.enclosing_class(la.func) is not None:
        return f"it uses `{name}`, the object the method belongs to", _first_use(la, name)
    defs = fctx.defs_before(la.loop, name)
    for d in defs:
        if d.kind in ("import", "def"):
            what = "a module imported" if d.kind == "import" else \
                "a class defined" if isinstance(d.node, ast.ClassDef) else "a function defined"
            return f"`{name}` is {what} in the function", _first_use(la, name)
    kind = la._at_loop(name)
    if kind.tag in (STRING, NONE, OBJECT):
        return f"`{name}` is a {kind.tag}, not an array", _first_use(la, name)
    if kind.tag == CONTAINER and not kind.is_array_tree():
        what = "holds Python values" if kind.is_array_tree() is False else "is not shown to hold only arrays"
        return f"`{name}`, {kind.describe()}, {what}", _first_use(la, name)
    # a Python number rides in the carry as a weakly typed scalar array: the same in array arithmetic
    # (its static uses, where a Python value is needed, are found by `_static_use_of`)
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load):
            why = _object_use(la, node)
            if why is None and not kind.is_array:
                why = _opaque_use(la, node)
            if why is not None:
                return why, node
    return None


def _opaque_use(la, node: ast.Name) -> Optional[str]:
    """``node`` (a value not shown to be an array) is an argument of a function
    whose source is not visible: it may need a Python value there (a shape, a
    size), which the carry would turn into a traced one."""
    parent = la.mctx.parent(node)
    if isinstance(parent, ast.keyword):
        parent = la.mctx.parent(parent)
    if not isinstance(parent, ast.Call) or parent.func is node:
        return None
    q = la.qual(parent.func)
    if is_array_call(q) or la.visible_function(parent.func) is not None:
        return None  # array operations, and functions whose uses the static checks follow
    return (f"`{node.id}` (not shown to be an array) is passed to `{short(ast.unparse(parent.func), 40)}`, whose "
            "source is not visible: it may need a Python value there")


def _object_use(la, node: ast.Name) -> Optional[str]:
    """A use that shows an object rather than an array (or a pytree of arrays)."""
    cur: ast.AST = node
    parent = la.mctx.parent(cur)
    while isinstance(parent, ast.Subscript) and parent.value is cur:
        cur, parent = parent, la.mctx.parent(parent)
    text = short(ast.unparse(cur), 40)
    if isinstance(parent, ast.Call) and parent.func is cur:
        return f"`{text}` is called (a function, not an array)"
    if isinstance(parent, ast.Attribute) and parent.value is cur and parent.attr not in _ARRAY_ATTRIBUTES:
        return f"`{text}.{parent.attr}` reads an object's attribute"
    if isinstance(parent, ast.Call) and cur in parent.args:
        q = la.qual(parent.func)
        if q is not None and (is_under(q, "numpy", "math") or q.split(".")[0] in ("numpy", "math")):
            return f"`{text}` goes to `{q}`, which needs a concrete value"
    return None


def _first_use(la, name: str) -> ast.AST:
    for node in walk_all(la.loop.body):
        if isinstance(node, ast.Name) and node.id == name:
            return node
    return la.loop


def _static_use_of(la, names: set[str]) -> Optional[tuple[str, ast.AST]]:
    """A passed value (or one computed from it in the body) used where a Python
    value is needed: in the carry it would be traced."""
    from . import control_flow, side_effects, static_uses

    if not names:
        return None
    saved = la.tainted, la.index_tainted, la.element_tainted, la.carries
    try:
        la.tainted = la._derived(set(names))
        la.index_tainted, la.element_tainted = set(), set()
        for check in (control_flow.check_branches, static_uses.check_static_uses, side_effects.check_conversions):
            try:
                check(la)
            except Decline as d:
                node = d.node if d.node is not None else la.loop
                involved = sorted({n.id for n in walk(node) if isinstance(n, ast.Name)} & la.tainted)
                if isinstance(node, ast.stmt):
                    keyword = type(node).__name__.lower()
                    what = f"the `{keyword}` at line {node.lineno}" if keyword in ("if", "while", "assert") \
                        else f"line {node.lineno}"
                else:
                    what = f"`{short(ast.unparse(node), 40)}`"
                direct = [n for n in involved if n in names]
                if direct:
                    origin = f" (from {', '.join(f'`{n}`' for n in direct)})"
                elif involved:
                    origin = (f" (`{'`, `'.join(involved)}`, computed from "
                             f"{', '.join(f'`{n}`' for n in sorted(names))})")
                else:
                    origin = ""
                return f"{what} needs a Python value{origin}, which the carry would turn into a traced one", node
    finally:
        la.tainted, la.index_tainted, la.element_tainted, la.carries = saved
    return None


def nested_steps_rewritten(results: list) -> None:
    """A loop whose step was to live inside an enclosing loop's step stays a
    loop when that enclosing loop was declined after all (a module-wide pass):
    alone, its closure step would compile on every eager call."""
    by_line = {(r.line, r.col): r for r in results}
    for r in results:
        plan = r.plan
        if r.status != "rewritten" or plan is None or plan.nested_in is None:
            continue
        outer = by_line.get(plan.nested_in)
        if outer is not None and outer.status != "rewritten":
            r.status, r.code, r.plan = "declined", "L2S702", None
            r.message = (f"the enclosing loop at line {outer.line} is not rewritten ({outer.code}), so this loop's "
                         "step would not be traced with it; rewrite or suppress both")


# ----------------------------------------------------------------------------- examples

INVALID = (
    Invalid("L2S701", "three-steps", """
        @jax.jit
        def power_iteration(a, v):
            for _ in range(3):  # <-
                v = a @ v
                v = v / jnp.linalg.norm(v)
            return v
        """, says=("3 steps", "min-trip-count")),
    Invalid("L2S701", "constant-table", """
        COEFFS = (0.5, 0.25)

        @jax.jit
        def clenshaw(x, b):
            for c in jnp.array(COEFFS):  # <-
                b = b * x + c
            return b
        """, says=("2 steps",)),
    Invalid("L2S703", "unroll-remainder", """
        @jax.jit
        def run(step, h, n, unroll):
            h = jax.lax.fori_loop(0, n // unroll, lambda i, h: step(h), h)
            for _ in range(n % unroll):  # <-
                h = jnp.tanh(h)
            return h
        """, says=("remainder", "unrolled on purpose")),
    Invalid("L2S703", "beside-fori-loop", """
        @jax.jit
        def smooth(h, xs):
            h_fast = jax.lax.fori_loop(0, xs.shape[0], lambda t, h: 0.5 * h + xs[t], h)
            for x in xs:
                h = 0.5 * h + x
            return h, h_fast
        """, says=("fori_loop", "on purpose")),
    Invalid("L2S702", "eager-object", """
        class Cell:
            def __init__(self, w):
                self.w = w

            def run(self, xs, h):
                for x in xs:
                    h = jnp.tanh(self.w @ h + x)  # <-
                return h
        """, says=("may run outside a JAX transformation", "self", "jax.jit")),
    Invalid("L2S702", "eager-callable", """
        def rnn(cell, xs, h):
            for x in xs:
                h = jnp.tanh(cell(h) + x)  # <-
            return h
        """, says=("`cell` is called", "compiled again on every eager call")),
    Invalid("L2S702", "eager-value-to-function-out-of-sight", """
        from features import embed

        def rnn(xs, h, width):
            for x in xs:
                h = jnp.tanh(h + x + embed(h, width=width))  # <-
            return h
        """, says=("`width`", "whose source is not visible")),
    Invalid("L2S702", "eager-static", """
        def rnn(xs, h, width):
            for x in xs:
                h = jnp.tanh(h + x[:width].sum())  # <-
            return h
        """, says=("needs a Python value",)),
)

VALID = (
    Valid("L2S701", "twelve-steps", """
        @jax.jit
        def refine(a, v):
            for _ in range(12):
                v = a @ v
                v = v / jnp.linalg.norm(v)
            return v
        """, "refine", ("f32[4,4], f32[4]",)),
    Valid("L2S702", "eager-hoisted", """
        def rnn(w, xs, h):
            for x in xs:
                h = jnp.tanh(w @ h + x)
            return h
        """, "rnn", ("f32[3,3], f32[6,3], f32[3]", "f32[3,3], f32[0,3], f32[3]", "f32[3,3], f32[1,3], f32[3]")),
    Valid("L2S702", "under-jit", """
        def rnn(cell, xs, h):
            for x in xs:
                h = jnp.tanh(cell(h) + x)
            return h

        @jax.jit
        def model(w, xs, h):
            return rnn(lambda h: w @ h, xs, h)
        """, "model", ("f32[3,3], f32[6,3], f32[3]",)),
)

NOT_THIS = (
    NotThis("L2S701", "symbolic-length", """
        @jax.jit
        def rnn(xs, h):
            for t in range(xs.shape[0]):
                h = jnp.tanh(h + xs[t])
            return h
        """, "rnn", ("f32[2,3], f32[3]",)),
)


def _nnx_eager_example() -> Invalid:
    from .module_stacks import SAME_LAYERS, nnx_decoder

    src = nnx_decoder(SAME_LAYERS, body="x = layer(x, weight)  # <-",
                      signature="def __call__(self, x: jax.Array, weight=1.0):")
    return Invalid("L2S702", "nnx-layer-stack-eager-with-a-python-value", src,
                   says=("`weight`", "module level", "under `jax.jit`"), framework="flax", header=False)


INVALID += (_nnx_eager_example(),)
